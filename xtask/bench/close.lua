-- wrk script for `cargo xtask bench tls`: every request on a new connection (a full TLS
-- handshake each time: no session resumption in wrk).
wrk.headers["Connection"] = "close"
