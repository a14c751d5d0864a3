//! Speaks Redis, HTTP and TLS far enough to name a refusal after the handshake; lints redis.conf.
