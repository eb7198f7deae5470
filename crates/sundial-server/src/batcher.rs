//! Group commit: concurrent requests hand their item to a batcher task, which stores everything
//! waiting in one transaction (one fsync) and answers each request after the commit. While one
//! batch commits, the next one gathers, so batches grow with load and a lone request waits for
//! nobody.

use std::future::Future;
use std::sync::Arc;
use sundial_core::store::{Result, StoreError};
use tokio::sync::{mpsc, oneshot};

type Item<I, O> = (I, oneshot::Sender<Result<O>>);

/// A handle to a batcher task.
pub struct Batcher<I, O> {
    tx: mpsc::Sender<Item<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
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
        for _ in 0..workers.max(1) {
            let rx = rx.clone();
            let commit = commit.clone();
            tokio::spawn(async move {
                loop {
                    let mut batch: Vec<Item<I, O>> = Vec::new();
                    {
                        let mut rx = rx.lock().await;
                        match rx.recv().await {
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
            });
        }
        Self { tx }
    }

    /// Submits one item and waits for its commit.
    pub async fn submit(&self, item: I) -> Result<O> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((item, reply)).await.map_err(|_| StoreError::Unavailable("server is shutting down".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("server is shutting down".into()))?
    }
}
