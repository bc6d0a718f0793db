//! The one bounded wait of the engine: retry an attempt until it succeeds or the time is up,
//! and say what the last attempt saw.

use std::time::{Duration, Instant};

/// Runs `attempt` every `every` until it returns `Ok` or `timeout` has passed since the first
/// attempt; then the error is the last attempt's (what the caller reports as "last saw").
/// There is always at least one attempt.
pub(super) async fn until<T>(
    timeout: Duration,
    every: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(last) if start.elapsed() >= timeout => return Err(last),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn until_returns_the_first_success_or_the_last_error() {
        let mut n = 0;
        let got = until(Duration::from_secs(5), Duration::from_millis(1), async || {
            n += 1;
            if n < 3 {
                Err(format!("attempt {n}"))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(got, Ok(3));
        let mut n = 0;
        let got: Result<(), String> =
            until(Duration::from_millis(20), Duration::from_millis(5), async || {
                n += 1;
                Err(format!("attempt {n}"))
            })
            .await;
        let last = got.unwrap_err();
        assert_eq!(last, format!("attempt {n}"), "the error is the last attempt's");
        assert!(n >= 2, "retried: {n}");
        let mut n = 0;
        let got: Result<(), String> = until(Duration::ZERO, Duration::from_millis(5), async || {
            n += 1;
            Err("no".into())
        })
        .await;
        assert!(got.is_err());
        assert_eq!(n, 1, "one attempt even with no time");
    }
}
