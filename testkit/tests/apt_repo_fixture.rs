//! The local apt repository: it serves a real index and real .debs over HTTP on the host's
//! non-loopback address, and apt-get in the bookworm image installs from it.

use imgfarm_testkit::{
    init_tracing, or_skip, require_root_or_skip, require_tools_or_skip, run_checked, AptRepo,
    DebianBase, HELLO_OUTPUT,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// One HTTP/1.0 request; returns the status code, headers and body.
fn http(repo: &AptRepo, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect((repo.ip(), repo.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {}\r\n\r\n", repo.ip()).expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf[split + 4..].to_vec();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (code, head, body)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .trim()
        .parse()
        .expect("number")
}

#[test]
fn apt_repo_serves_index_and_debs() {
    init_tracing();
    let name = "apt_repo_serves_index_and_debs";
    let Some(repo) = or_skip(name, AptRepo::start()) else {
        return;
    };
    assert!(!repo.ip().is_loopback(), "{}", repo.ip());
    assert_eq!(repo.url(), format!("http://{}:{}/", repo.ip(), repo.port()));
    assert_eq!(
        repo.sources_line(),
        format!("deb [trusted=yes] http://{}:{}/ ./", repo.ip(), repo.port())
    );

    let (code, head, body) = http(&repo, "GET", "/Packages");
    assert_eq!(code, 200, "{head}");
    assert_eq!(content_length(&head), body.len());
    let packages = String::from_utf8(body).expect("utf-8");
    for stanza in [
        "Package: jq\n",
        "Package: libjq1\n",
        "Package: libonig5\n",
        "Package: imgfarm-hello\n",
    ] {
        assert!(packages.contains(stanza), "Packages lacks {stanza}");
    }
    assert!(packages.contains("Architecture: arm64\n"));
    assert!(packages.contains("Architecture: amd64\n"));
    assert!(packages.contains("Filename: ./imgfarm-hello_1.0_all.deb\n"));

    let (code, _, gz) = http(&repo, "GET", "/Packages.gz");
    assert_eq!(code, 200);
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let (code, _, release) = http(&repo, "GET", "/Release");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&release).contains(" Packages.gz\n"));

    // Every .deb named in Packages is served, byte for byte.
    let hello = std::fs::read(repo.hello_deb()).expect("hello deb");
    let (code, head, body) = http(&repo, "GET", "/imgfarm-hello_1.0_all.deb");
    assert_eq!(code, 200, "{head}");
    assert_eq!(body, hello);
    for f in packages
        .lines()
        .filter_map(|l| l.strip_prefix("Filename: ./"))
    {
        // Debian names files with an epoch `N%3a…` (apt-get download); a URL escapes the
        // `%`, as apt does when it fetches them.
        let (code, head, body) = http(&repo, "GET", &format!("/{}", f.replace('%', "%25")));
        assert_eq!(code, 200, "{f}: {head}");
        assert_eq!(body, std::fs::read(repo.dir().join(f)).expect("deb"), "{f}");
    }

    // HEAD: length, no body. Missing: 404. `..`: refused.
    let (code, head, body) = http(&repo, "HEAD", "/imgfarm-hello_1.0_all.deb");
    assert_eq!(code, 200);
    assert_eq!(content_length(&head), hello.len());
    assert!(body.is_empty());
    assert_eq!(http(&repo, "GET", "/nope.deb").0, 404);
    assert_eq!(http(&repo, "GET", "/../../etc/passwd").0, 403);
    assert_eq!(http(&repo, "GET", "/%2e%2e/etc/passwd").0, 403);
    assert_eq!(http(&repo, "POST", "/Packages").0, 405);

    // The hello package is what the docs say.
    if require_tools_or_skip(name, &["dpkg-deb"]) {
        let info = run_checked(Command::new("dpkg-deb").arg("-I").arg(repo.hello_deb()))
            .expect("dpkg-deb -I");
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("Architecture: all"), "{info}");
        assert!(info.contains("postinst"), "{info}");
        let files = run_checked(Command::new("dpkg-deb").arg("-c").arg(repo.hello_deb()))
            .expect("dpkg-deb -c");
        let files = String::from_utf8_lossy(&files.stdout);
        assert!(files.contains("-rwxr-xr-x root/root"), "{files}");
        assert!(files.contains("./usr/bin/imgfarm-hello"), "{files}");
        assert!(
            files.contains("./usr/share/doc/imgfarm-hello/copyright"),
            "{files}"
        );
    }

    // Stops on drop: the port no longer answers.
    let (ip, port) = (repo.ip(), repo.port());
    drop(repo);
    assert!(TcpStream::connect((ip, port)).is_err());
}

/// apt-get update + install of jq and imgfarm-hello inside the bookworm amd64 rootfs
/// (unpacked as root into a temp dir, in a private mount namespace with chroot), with only
/// the local repository in sources.list.
#[test]
fn apt_get_installs_jq_and_hello_in_bookworm() {
    init_tracing();
    let name = "apt_get_installs_jq_and_hello_in_bookworm";
    if !require_root_or_skip(name) || !require_tools_or_skip(name, &["unshare", "chroot", "tar"]) {
        return;
    }
    let Some(base) = or_skip(name, DebianBase::get()) else {
        return;
    };
    let Some(repo) = or_skip(name, AptRepo::start()) else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("imgfarm-apt-smoke-")
        .tempdir()
        .expect("tempdir");
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    run_checked(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(base.rootfs_tar("bookworm", "amd64"))
            .arg("-C")
            .arg(&root),
    )
    .expect("unpack");
    let script = r#"
        set -e
        r=$1
        mount -t proc proc "$r/proc"
        mount --bind /dev "$r/dev"
        echo "$2" > "$r/etc/apt/sources.list"
        rm -f "$r"/etc/apt/sources.list.d/*
        chroot "$r" apt-get -q -o Acquire::Retries=0 update
        chroot "$r" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends jq imgfarm-hello
        echo '{"a":[1,2]}' | chroot "$r" jq -c '.a|length'
        chroot "$r" imgfarm-hello
        chroot "$r" stat -c '%n %U:%G %a' /var/lib/imgfarm-hello /var/lib/imgfarm-hello/state
        chroot "$r" getent passwd imgfarm-hello
    "#;
    let out = run_checked(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--fork", "sh", "-c"])
            .arg(script)
            .arg("sh")
            .arg(&root)
            .arg(repo.sources_line()),
    )
    .expect("apt-get in the bookworm rootfs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("deb.debian.org") && !stdout.contains("security.debian.org"),
        "{stdout}"
    );
    // apt names the source without the trailing slash: `Get:4 http://ADDR:PORT ./ Packages`.
    let src = format!("http://{}:{} ./", repo.ip(), repo.port());
    assert!(stdout.contains(&format!("{src} Packages")), "{stdout}");
    assert!(stdout.contains(&format!("{src} jq ")), "{stdout}");
    assert!(
        stdout.contains(&format!("{src} imgfarm-hello 1.0")),
        "{stdout}"
    );
    assert!(
        stdout.contains("Setting up imgfarm-hello (1.0)"),
        "{stdout}"
    );
    assert!(stdout.contains("Setting up jq "), "{stdout}");
    assert!(stdout.lines().any(|l| l == "2"), "{stdout}");
    assert!(stdout.lines().any(|l| l == HELLO_OUTPUT), "{stdout}");
    assert!(
        stdout.contains("/var/lib/imgfarm-hello imgfarm-hello:imgfarm-hello 750\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/var/lib/imgfarm-hello/state imgfarm-hello:imgfarm-hello 640\n"),
        "{stdout}"
    );
    assert!(stdout.contains("imgfarm-hello:x:"), "{stdout}");
}
