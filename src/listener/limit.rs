//! `server.max_connections`: the open downstream connections of all workers, counted without a
//! lock. (tokio's `Semaphore` takes its waiters' lock on every release, a lock every worker
//! shares; here the only lock is `Notify`'s, taken when the limit is reached.)

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    /// Signalled when a connection closes while the limit was reached.
    freed: Notify,
}

/// One open connection's place under the limit, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<ConnectionLimit>);

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
        })
    }

    /// A slot, at once while fewer than `max` connections are open, else once one closes.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            if let Some(slot) = self.try_acquire() {
                return slot;
            }
            // Registered before looking again: a close between the two is not missed.
            let mut freed = pin!(self.freed.notified());
            freed.as_mut().enable();
            if let Some(slot) = self.try_acquire() {
                return slot;
            }
            freed.await;
        }
    }

    fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let limit = &self.0;
        if limit.open.fetch_sub(1, Ordering::Release) >= limit.max {
            // Acceptors may be waiting for this slot (each looks again; one gets it).
            limit.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn past_the_limit_an_acquire_waits_for_a_close() {
        let limit = ConnectionLimit::new(2);
        let (a, b) = (limit.acquire().await, limit.acquire().await);
        assert_eq!(limit.open(), 2);
        let mut third = pin!(limit.acquire());
        assert!(poll_once(third.as_mut()).is_pending());
        assert!(poll_once(third.as_mut()).is_pending(), "still full");
        drop(a);
        assert_eq!(limit.open(), 1);
        let Poll::Ready(c) = poll_once(third.as_mut()) else {
            panic!("a close must free the waiting acquire");
        };
        assert_eq!(limit.open(), 2);
        drop((b, c));
        assert_eq!(limit.open(), 0);
    }

    #[tokio::test]
    async fn every_waiter_gets_a_slot_as_connections_close() {
        let limit = ConnectionLimit::new(1);
        let first = limit.acquire().await;
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move { drop(limit.acquire().await) })
            })
            .collect();
        tokio::task::yield_now().await;
        drop(first);
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("each waiter gets the slot in turn")
                .unwrap();
        }
        assert_eq!(limit.open(), 0);
    }
}
