//! Test fixtures that use real parts: a docker-registry on loopback, busybox base images, the farm user.
