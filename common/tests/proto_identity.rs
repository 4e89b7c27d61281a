//! Farm identity: files, modes, the TLS directory loader and role parsing.

use imgfarm_common::identity::{
    init_farm, issue_leaf, peer_identity_from_der, write_new_files, FileSpec, IdentityError,
    InitOptions, Role, TlsDir, Validity,
};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn write_farm(dir: &Path, workers: &[&str], clients: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let (ca, coord) = init_farm(&InitOptions::default()).unwrap();
    let mut leaves = vec![coord];
    for w in workers {
        leaves.push(issue_leaf(&ca, Role::Worker, w, &[], Validity::default_leaf()).unwrap());
    }
    for c in clients {
        leaves.push(issue_leaf(&ca, Role::Client, c, &[], Validity::default_leaf()).unwrap());
    }
    let mut files = vec![
        FileSpec {
            path: dir.join("ca.crt"),
            contents: ca.cert_pem.clone(),
            mode: 0o644,
        },
        FileSpec {
            path: dir.join("ca.key"),
            contents: ca.key_pem.clone(),
            mode: 0o600,
        },
    ];
    for l in leaves {
        files.push(FileSpec {
            path: dir.join(format!("{}.crt", l.stem)),
            contents: l.cert_pem,
            mode: 0o644,
        });
        files.push(FileSpec {
            path: dir.join(format!("{}.key", l.stem)),
            contents: l.key_pem,
            mode: 0o600,
        });
    }
    write_new_files(&files, false).unwrap();
}

#[test]
fn keys_are_0600_and_files_are_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_farm(dir, &["w1"], &["alice"]);
    for key in [
        "ca.key",
        "coordinator.key",
        "worker-w1.key",
        "client-alice.key",
    ] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let before = std::fs::read(dir.join("ca.key")).unwrap();
    let again = [FileSpec {
        path: dir.join("ca.key"),
        contents: "x".into(),
        mode: 0o600,
    }];
    assert!(matches!(
        write_new_files(&again, false),
        Err(IdentityError::Exists(_))
    ));
    assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), before);
    write_new_files(&again, true).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("ca.key")).unwrap(), "x");
    let mode = std::fs::metadata(dir.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn tls_dir_finds_each_role() {
    let tmp = tempfile::tempdir().unwrap();
    write_farm(tmp.path(), &["w1", "w2"], &["alice"]);
    let d = TlsDir::new(tmp.path());
    let c = d.load(Role::Coordinator, None).unwrap();
    assert_eq!(
        (c.identity.role, c.identity.name.as_str()),
        (Role::Coordinator, "coordinator")
    );
    let w = d.load(Role::Worker, Some("w2")).unwrap();
    assert_eq!(w.identity.name, "w2");
    let a = d.load(Role::Client, None).unwrap();
    assert_eq!(a.identity.name, "alice");
}

#[test]
fn tls_dir_errors_list_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    write_farm(tmp.path(), &["w1"], &["alice", "bob"]);
    let d = TlsDir::new(tmp.path());
    let e = d.load(Role::Worker, Some("w9")).unwrap_err().to_string();
    assert!(e.contains("worker-w9.crt not found"), "{e}");
    assert!(e.contains("worker-w1.crt"), "{e}");
    assert!(e.contains("--worker w9"), "{e}");
    let e = d.load(Role::Client, None).unwrap_err().to_string();
    assert!(e.contains("several client certificates"), "{e}");
    assert!(e.contains("client-bob.crt"), "{e}");
    let e = d.load(Role::Worker, None).unwrap_err().to_string();
    assert!(e.contains("--name"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    let e = TlsDir::new(empty.path())
        .load(Role::Client, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no .crt or .key files"), "{e}");
    assert!(e.contains("farm issue"), "{e}");
}

#[test]
fn a_renamed_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_farm(tmp.path(), &["w1"], &["alice"]);
    let p = tmp.path();
    // Pretend alice's client certificate is a worker's.
    std::fs::copy(p.join("client-alice.crt"), p.join("worker-evil.crt")).unwrap();
    std::fs::copy(p.join("client-alice.key"), p.join("worker-evil.key")).unwrap();
    let e = TlsDir::new(p)
        .load(Role::Worker, Some("evil"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("certificate is for client alice"), "{e}");
}

#[test]
fn role_is_read_from_the_certificate() {
    let (ca, coord) = init_farm(&InitOptions {
        sans: vec!["farm.example".into(), "10.0.0.1".into()],
        ..InitOptions::default()
    })
    .unwrap();
    let der = |pem: &str| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    };
    let id = peer_identity_from_der(&der(&coord.cert_pem)).unwrap();
    assert_eq!(id.role, Role::Coordinator);
    let w = issue_leaf(&ca, Role::Worker, "arm64-1", &[], Validity::default_leaf()).unwrap();
    let id = peer_identity_from_der(&der(&w.cert_pem)).unwrap();
    assert_eq!((id.role, id.name.as_str()), (Role::Worker, "arm64-1"));
    // The CA itself carries no role.
    assert!(matches!(
        peer_identity_from_der(&der(&ca.cert_pem)),
        Err(IdentityError::NoRole(_))
    ));
    assert!(peer_identity_from_der(b"garbage").is_err());
    // Invalid names are refused at issue time.
    assert!(issue_leaf(&ca, Role::Worker, "../x", &[], Validity::default_leaf()).is_err());
}

#[test]
fn a_certificate_with_two_roles_is_refused() {
    use rcgen::{CertificateParams, Issuer, KeyPair, SanType};
    let (ca, _) = init_farm(&InitOptions::default()).unwrap();
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem).unwrap()).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![
        SanType::URI("imgfarm://role/worker/a".try_into().unwrap()),
        SanType::URI("imgfarm://role/client/a".try_into().unwrap()),
    ];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    let e = peer_identity_from_der(cert.der()).unwrap_err().to_string();
    assert!(e.contains("2 imgfarm role URIs"), "{e}");
}

#[test]
fn a_ca_file_without_a_certificate_is_refused_and_a_bundle_is_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    write_farm(tmp.path(), &["w1"], &[]);
    let ca = std::fs::read_to_string(tmp.path().join("ca.crt")).unwrap();
    let key = std::fs::read_to_string(tmp.path().join("ca.key")).unwrap();
    // A key where the CA certificate should be.
    std::fs::write(tmp.path().join("ca.crt"), &key).unwrap();
    let err = TlsDir::new(tmp.path())
        .load(Role::Worker, Some("w1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ca.crt"), "{err}");
    assert!(err.contains("no CERTIFICATE block"), "{err}");
    // Two CAs (a rotation bundle): both are trust roots.
    let (other, _) = init_farm(&InitOptions::default()).unwrap();
    std::fs::write(tmp.path().join("ca.crt"), format!("{ca}{}", other.cert_pem)).unwrap();
    let creds = TlsDir::new(tmp.path())
        .load(Role::Worker, Some("w1"))
        .unwrap();
    assert_eq!(creds.ca.len(), 2);
}
