//! The admin API from a test, over a plain blocking connection so that `eventually` can poll it.

use std::net::SocketAddr;

use super::raw::RawConn;

/// `GET /api/pools`, parsed; panics on anything but a `200` with JSON.
pub fn pools(admin: SocketAddr) -> serde_json::Value {
    let mut conn = RawConn::open(admin);
    conn.send(b"GET /api/pools HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.status(), 200, "{}", response.text());
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", response.text()))
}

/// One backend's entry in `GET /api/pools`, or `Null` when there is none.
pub fn backend(admin: SocketAddr, pool: &str, address: &str) -> serde_json::Value {
    pools(admin)["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == pool)
        .flat_map(|p| p["backends"].as_array().cloned().unwrap_or_default())
        .find(|b| b["address"] == address)
        .unwrap_or_default()
}

/// A backend's `state` in `GET /api/pools` (`healthy`, `unhealthy`, ...).
pub fn state(admin: SocketAddr, pool: &str, address: &str) -> String {
    backend(admin, pool, address)["state"]
        .as_str()
        .unwrap_or("absent")
        .to_string()
}
