//! LISTEN on the log's channel, so live streams wake when another process
//! commits. Reconnects with a backoff; every (re)connect wakes the streams,
//! which then read whatever a gap in notifications may have hidden.

use crate::event_log::Shared;
use futures::{StreamExt, stream};
use std::{sync::Arc, time::Duration};
use tokio_postgres::AsyncMessage;
use tracing::{debug, warn};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until aborted (when the last handle of the log is dropped).
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    let listen = format!("LISTEN \"{}\"", shared.tables.channel());
    let wake = |shared: &Shared| shared.wake.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        let connected = match shared.config.tls() {
            Ok(tls) => shared.config.pg_config().connect(tls).await,
            Err(error) => {
                warn!(%error, "no TLS connector for LISTEN; live streams fall back to polling");
                return;
            }
        };
        match connected {
            Ok((client, mut connection)) => {
                let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = client.batch_execute(&listen);
                tokio::pin!(listening);
                let mut listened = false;
                loop {
                    tokio::select! {
                        result = &mut listening, if !listened => {
                            if let Err(error) = result {
                                warn!(%error, "LISTEN failed; live streams fall back to polling");
                                break;
                            }
                            listened = true;
                            backoff = Duration::from_millis(100);
                            // Anything committed while we were not listening.
                            wake(&shared);
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => wake(&shared),
                            Some(Ok(_)) => {}
                            Some(Err(error)) => {
                                debug!(%error, "notification connection lost; reconnecting");
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            Err(error) => {
                debug!(%error, "cannot connect for LISTEN; live streams poll meanwhile");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        wake(&shared);
    }
}
