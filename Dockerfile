# imgfarm's own image: the prebuilt `imgfarm` binary (every role: build, worker, coordinator)
# on Debian, run as the non-root user `imgfarm` (uid 1000) with subordinate id ranges, so the
# builds inside are rootless as on a host. No toolchain inside: build the binary first.
#
#   scripts/build-image.sh                        # linux/amd64 (+ linux/arm64 if built), release
#   imgfarm build --platform linux/amd64 -t imgfarm:dev --build-arg PROFILE=debug .
#
# The context is the repository root; .dockerignore lets only the binaries through, and COPY
# reads only the one file it names. Per platform (TARGETARCH) the binary is taken from
#   amd64: target/$PROFILE/imgfarm        (a native build on an x86_64 host)
#   arm64: target/aarch64-unknown-linux-gnu/$PROFILE/imgfarm   (cargo build --target ...)
# (see README.md, "imgfarm's own image").
#
# Build args:
#   BASE        the base image (Debian 12 or newer; the binary links glibc dynamically)
#   PROFILE     cargo profile directory: release (default) or debug
#   WITH_QEMU   1 installs qemu-user-static (the emulators for foreign-platform RUN steps; the
#               host's binfmt_misc must still register them, with the F flag, as
#               `scripts/setup.sh` does)
#   APT_SOURCES when set, replaces the base's apt sources (a mirror, or an offline repository:
#               `deb [trusted=yes] http://HOST:PORT/ ./`) for the install step only
ARG BASE=debian:bookworm-slim
ARG PROFILE=release

FROM scratch AS bin-amd64
ARG PROFILE
COPY target/${PROFILE}/imgfarm /imgfarm

FROM scratch AS bin-arm64
ARG PROFILE
COPY target/aarch64-unknown-linux-gnu/${PROFILE}/imgfarm /imgfarm

FROM bin-${TARGETARCH} AS bin

FROM ${BASE}
ARG WITH_QEMU=0
ARG APT_SOURCES=
# uidmap: newuidmap/newgidmap, which map the subordinate ids; passt: pasta, the RUN steps'
# network; ca-certificates: the system roots the registry client trusts (https); libcap2-bin:
# setcap, below.
RUN set -eu; \
    if [ -n "$APT_SOURCES" ]; then \
        mv /etc/apt/sources.list.d /etc/apt/sources.list.d.orig; mkdir /etc/apt/sources.list.d; \
        if [ -e /etc/apt/sources.list ]; then mv /etc/apt/sources.list /etc/apt/sources.list.orig; fi; \
        printf '%s\n' "$APT_SOURCES" > /etc/apt/sources.list; \
    fi; \
    qemu=; if [ "$WITH_QEMU" = 1 ]; then qemu=qemu-user-static; fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        uidmap passt ca-certificates libcap2-bin $qemu; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \
    if [ -n "$APT_SOURCES" ]; then \
        rm -rf /etc/apt/sources.list /etc/apt/sources.list.d; \
        mv /etc/apt/sources.list.d.orig /etc/apt/sources.list.d; \
        if [ -e /etc/apt/sources.list.orig ]; then mv /etc/apt/sources.list.orig /etc/apt/sources.list; fi; \
    fi; \
    # File capabilities instead of the setuid bit: a setuid-root newuidmap runs as euid 0 and
    # then needs CAP_SYS_ADMIN over the new user namespace to write a multi-range map, which an
    # unprivileged container lacks ("newuidmap: write to uid_map failed: Operation not
    # permitted"); with CAP_SETUID (CAP_SETGID) as a file capability it keeps the caller's
    # uid, which owns that namespace (as rootless BuildKit's image does). Needs the container's
    # default capabilities and privilege escalation allowed (not no_new_privs).
    chmod u-s /usr/bin/newuidmap /usr/bin/newgidmap; \
    setcap cap_setuid=ep /usr/bin/newuidmap; \
    setcap cap_setgid=ep /usr/bin/newgidmap
# The user builds run as, with 65536 subordinate uids and gids (container ids 1..65536 of each
# build step), and the state directory (images, blobs, snapshots, build cache): mount a volume
# there. It must allow overlayfs upper dirs (ext4, xfs, tmpfs; not overlayfs itself).
RUN useradd --uid 1000 --user-group --create-home --shell /bin/sh imgfarm \
 && echo 'imgfarm:100000:65536' > /etc/subuid \
 && echo 'imgfarm:100000:65536' > /etc/subgid \
 && chmod 0644 /etc/subuid /etc/subgid \
 && install -d -o imgfarm -g imgfarm -m 0700 /var/lib/imgfarm
COPY --from=bin --chmod=0755 /imgfarm /usr/local/bin/imgfarm
ENV IMGFARM_STATE=/var/lib/imgfarm
VOLUME /var/lib/imgfarm
USER imgfarm
WORKDIR /home/imgfarm
ENTRYPOINT ["/usr/local/bin/imgfarm"]
CMD ["--help"]
