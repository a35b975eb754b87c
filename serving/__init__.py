"""Ray Serve deployments and `build_app`; imports `crossrec`."""
