//! How an idle apalis worker wakes to fetch: every `poll` interval.
//!
//! apalis 1.0's `IntervalStrategy` replaces its timer when it fires but
//! does not poll the new one, so no wake-up is registered for the next
//! tick: a worker whose fetch came back empty then sleeps until its next
//! heartbeat (5 s here). That is the "poll timer stops re-arming" stall
//! the soak caught (refresh runs bunched at heartbeat times, a 30-order
//! run taking 5 s). This strategy polls the new timer at once, so the next
//! tick is always armed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{PollSnapshot, PollStrategy};

pub struct Rearming {
    every: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Rearming {
    pub fn every(every: Duration) -> Self {
        Rearming { every, timer: None }
    }
}

impl PollStrategy for Rearming {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let every = self.every;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let mut next = Box::pin(tokio::time::sleep(every));
        // Registers the waker for the next tick now (the upstream bug).
        let _ = next.as_mut().poll(cx);
        self.timer = Some(next);
        Poll::Ready(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strategy that fired must already be armed for the next tick: the
    /// waker is woken again without anyone polling in between.
    #[tokio::test]
    async fn after_a_tick_the_next_one_is_armed() {
        let mut strategy = Rearming::every(Duration::from_millis(20));
        let snapshot = PollSnapshot::default();
        let wakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waker = waker_counting(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(strategy.poll_drive(&mut cx, &snapshot).is_pending());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(strategy.poll_drive(&mut cx, &snapshot).is_ready());
        let before = wakes.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            wakes.load(std::sync::atomic::Ordering::SeqCst) > before,
            "the next tick woke the worker"
        );
    }

    fn waker_counting(n: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> std::task::Waker {
        struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        std::task::Waker::from(std::sync::Arc::new(Count(n)))
    }
}
