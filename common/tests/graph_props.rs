//! Graph construction never panics, whatever instructions it is given, and
//! is deterministic.

mod graph_support;
use graph_support::*;
use imgfarm_common::dockerfile::frontend::build_graph;
use proptest::prelude::*;

const LINES: &[&str] = &[
    "FROM alpine AS a",
    "FROM a AS b",
    "FROM scratch",
    "FROM --platform=$BUILDPLATFORM busybox",
    "FROM $BASE",
    "ARG BASE=alpine",
    "ARG X",
    "ARG TARGETARCH",
    "ENV X=$X-1 Y=${X:-d}",
    "RUN echo $X",
    "RUN --mount=type=cache,target=/c,sharing=locked true",
    "RUN --mount=type=bind,from=a,target=/a true",
    "RUN --mount=type=secret,id=s --network=none true",
    "COPY f /f",
    "COPY --from=a / /a",
    "COPY --from=1 / /b",
    "COPY --from=b /x /y",
    "COPY --link f /l/",
    "ADD f.tar /t/",
    "ADD https://example.com/x /x",
    "WORKDIR /w",
    "WORKDIR rel",
    "USER 1000",
    "LABEL a=b",
    "EXPOSE 80/tcp",
    "VOLUME /v",
    "CMD [\"x\"]",
    "ENTRYPOINT /e",
    "SHELL [\"/bin/bash\", \"-c\"]",
    "HEALTHCHECK CMD true",
    "ONBUILD RUN echo onbuild",
    "STOPSIGNAL SIGTERM",
    "MAINTAINER m",
    "BOGUS x",
    "COPY --nope=1 a b",
    "RUN --mount=type=cache,bad=1 true",
    "FROM --platform=linux/nope/x/y alpine",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn never_panics_and_is_deterministic(picks in proptest::collection::vec(0..LINES.len(), 1..24), target in 0..3usize) {
        let text: String = std::iter::once("ARG BASE=alpine\nFROM alpine AS a\n".to_string()).chain(picks.iter().map(|&i| format!("{}\n", LINES[i]))).collect();
        let ctx = FakeContext::with(&[("f", "1"), ("f.tar", "t")]);
        let pr = parse(&text);
        let mut req = request(&pr, &ctx);
        req.platforms = vec![imgfarm_common::platform::Platform::linux_amd64(), imgfarm_common::platform::Platform::linux_arm64()];
        req.target = ["a", "b", ""][target].to_string().into();
        if req.target.as_deref() == Some("") {
            req.target = None;
        }
        let first = build_graph(&req);
        let second = build_graph(&req);
        match (first, second) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a.to_json(), b.to_json()),
            (Err(a), Err(b)) => {
                prop_assert_eq!(&a, &b);
                prop_assert!(a.to_string().starts_with("Dockerfile"));
            }
            _ => prop_assert!(false, "not deterministic"),
        }
    }
}
