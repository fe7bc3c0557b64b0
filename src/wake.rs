//! Sleeping until a state machine's next deadline: the async shells around
//! the sans-IO machines (the connection manager, the DHT publisher and
//! room finder, the port mapper, a fetch's give-up time) wait on
//! [`until`] beside their other inputs.

/// Sleeps until `at`; with no deadline, never wakes.
pub async fn until(at: Option<impl Into<tokio::time::Instant>>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
