//! The reference oracle: each case of `tests/oracle/` is built with imgfarm (rootless, as the
//! farm user) and with BuildKit (dockerd 20.10, rootful), both FROM the same busybox, and the
//! exported images must have equal file trees (paths, types, modes, owners, content, symlink
//! targets, hardlink groups; mtimes ignored) and equal config fields (Env, Cmd, Entrypoint,
//! WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal).
//!
//! Needs root (for dockerd) and docker.io; elsewhere each test prints
//! `SKIPPED: ... because dockerd can't start ...`.

mod build_support;
mod oracle_support;

use oracle_support::assert_matches_buildkit;

macro_rules! oracle_case {
    ($name:ident) => {
        #[test]
        fn $name() {
            assert_matches_buildkit(concat!("oracle_", stringify!($name)), stringify!($name));
        }
    };
    ($name:ident, ignore = $why:literal) => {
        #[test]
        #[ignore = $why]
        fn $name() {
            assert_matches_buildkit(concat!("oracle_", stringify!($name)), stringify!($name));
        }
    };
}

oracle_case!(multistage);
oracle_case!(copy_from);
oracle_case!(mount_cache);
oracle_case!(mount_bind);
oracle_case!(mount_tmpfs);
oracle_case!(mount_secret);
oracle_case!(user_workdir_env_arg);
oracle_case!(shell);
oracle_case!(dockerignore);
oracle_case!(whiteouts);
oracle_case!(hardlinks);
oracle_case!(symlinks);
oracle_case!(modes_owners);
oracle_case!(buildplatform);
oracle_case!(onbuild);
oracle_case!(config_fields);
oracle_case!(workdir_create);
oracle_case!(mount_targets_created);
oracle_case!(copy_through_dir_symlink);
oracle_case!(run_etc_hosts);
oracle_case!(mount_bind_from_stage);
