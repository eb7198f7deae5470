//! Group commit: concurrent requests hand their item to a batcher task, which stores everything
//! waiting in one transaction (one fsync) and answers each request after the commit. While one
//! batch commits, the next one gathers, so batches grow with load and a lone request waits for
//! nobody.

use std::future::Future;
use std::sync::{Arc, Mutex};
use sundial_core::store::{Result, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Item<I, O> = (I, oneshot::Sender<Result<O>>);

/// A handle to a batcher's tasks; clones share them.
pub struct Batcher<I, O> {
    tx: mpsc::Sender<Item<I, O>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    stop: CancellationToken,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), tasks: self.tasks.clone(), stop: self.stop.clone() }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts `workers` batcher tasks calling `commit` with up to `max_batch` items each.
    pub fn start<F, Fut>(max_batch: usize, workers: usize, commit: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<O>>>> + Send,
    {
        let (tx, rx) = mpsc::channel::<Item<I, O>>(max_batch * 4);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let commit = Arc::new(commit);
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for _ in 0..workers.max(1) {
            let rx = rx.clone();
            let commit = commit.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let mut batch: Vec<Item<I, O>> = Vec::new();
                    {
                        let mut rx = rx.lock().await;
                        // Once stopped, what is already queued is still committed (its callers
                        // wait for an answer); then the task ends.
                        let first = tokio::select! {
                            biased;
                            item = rx.recv() => item,
                            _ = stop.cancelled() => rx.try_recv().ok(),
                        };
                        match first {
                            Some(first) => batch.push(first),
                            None => return,
                        }
                        while batch.len() < max_batch {
                            match rx.try_recv() {
                                Ok(item) => batch.push(item),
                                Err(_) => break,
                            }
                        }
                    }
                    let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                    let n = items.len();
                    metrics::histogram!("sundial_group_commit_size").record(n as f64);
                    match commit(items).await {
                        Ok(results) => {
                            for (reply, r) in replies.into_iter().zip(results) {
                                let _ = reply.send(r);
                            }
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            let unavailable = matches!(e, StoreError::Unavailable(_));
                            for reply in replies {
                                let _ = reply.send(Err(if unavailable {
                                    StoreError::Unavailable(msg.clone())
                                } else {
                                    StoreError::Internal(msg.clone())
                                }));
                            }
                        }
                    }
                }
            }));
        }
        Self { tx, tasks: Arc::new(Mutex::new(tasks)), stop }
    }

    /// Stops the tasks once they committed what is already queued, and waits for them. Items
    /// submitted afterwards are refused as "shutting down".
    pub async fn stop(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("batcher task list"));
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "batcher task failed");
            }
        }
    }

    /// Submits one item and waits for its commit.
    pub async fn submit(&self, item: I) -> Result<O> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((item, reply)).await.map_err(|_| StoreError::Unavailable("server is shutting down".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("server is shutting down".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_commits_what_is_queued_then_refuses_new_items() {
        let b: Batcher<u32, u32> = Batcher::start(10, 2, |items: Vec<u32>| async move {
            Ok(items.into_iter().map(|i| Ok(i * 2)).collect::<Vec<_>>())
        });
        // Queued (not yet answered) before stop: each must still be committed and answered.
        let mut replies = Vec::new();
        for i in 0..50 {
            let (reply, rx) = oneshot::channel();
            b.tx.send((i, reply)).await.unwrap();
            replies.push(rx);
        }
        b.stop().await;
        for (i, rx) in replies.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap().unwrap(), i as u32 * 2);
        }
        // The tasks are gone (with the queue's receiver), so a new item is refused at once.
        let late = tokio::time::timeout(std::time::Duration::from_secs(5), b.submit(1)).await;
        assert!(matches!(late, Ok(Err(StoreError::Unavailable(_)))), "{late:?}");
    }
}
