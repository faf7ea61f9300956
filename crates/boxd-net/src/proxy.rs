//! PLACEHOLDER until the net-proxy branch is merged (same signatures).
use std::sync::Arc;

use crate::error::{NetError, Result};
use crate::events::EventSink;
use crate::registry::Registry;
use crate::upstream::Upstreams;

pub struct Proxy;

impl Proxy {
    pub fn new(_: Arc<Registry>, _: Arc<Upstreams>, _: EventSink) -> Self {
        Proxy
    }
    pub fn bind_pair(port: u16) -> Result<(std::net::TcpListener, std::net::TcpListener, u16)> {
        let a = std::net::TcpListener::bind(("0.0.0.0", port))
            .map_err(NetError::io("bind the proxy"))?;
        let p = a.local_addr().map_err(NetError::io("x"))?.port();
        let b = std::net::TcpListener::bind(("::1", 0)).map_err(NetError::io("bind the proxy"))?;
        Ok((a, b, p))
    }
    pub async fn serve(self: Arc<Self>, _l: std::net::TcpListener) {}
}
