//! Reads of the store's newest revision, shared by the consistent reads that wait on them.
//!
//! A consistent read needs a revision read that *began after it arrived*: its answer is then at
//! least every write acknowledged before the read arrived. Reads that arrive while one is under
//! way cannot use that one, but they can all share the next, as a group commit shares a flush:
//! one round at a time, each for every read that arrived during the one before. Under load the
//! backend answers one revision read per round trip instead of one per request.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::{Revision, Storage, StorageError};

type Answer = Shared<BoxFuture<'static, Result<Revision, StorageError>>>;

/// Rounds of revision reads on one backend.
pub(crate) struct Newest {
    inner: Arc<dyn Storage>,
    next: Arc<Mutex<Option<Round>>>,
}

/// A revision read that readers may still join while it has not begun.
struct Round {
    begun: bool,
    answer: Answer,
}

/// What a reader waits for: its own read's answer, or a round.
enum Joined {
    Read(Result<Revision, StorageError>),
    Round(Answer),
}

impl Newest {
    /// Shared revision reads on `inner`.
    pub(crate) fn new(inner: Arc<dyn Storage>) -> Self {
        Newest {
            inner,
            next: Arc::new(Mutex::new(None)),
        }
    }

    /// The store's newest revision, read after this call began.
    pub(crate) async fn revision(&self) -> Result<Revision, StorageError> {
        // Decided in one poll, so the lock is never held across an await.
        let joined = std::future::poll_fn(|context| Poll::Ready(self.join(context))).await;
        match joined {
            Joined::Read(answer) => answer,
            Joined::Round(answer) => answer.await,
        }
    }

    /// The round to wait for, or (with no read under way) a read begun and polled in `context`:
    /// a backend in this process answers at once, with nothing to share, and a remote one's
    /// read becomes the round later readers follow. Polled with the caller's own waker, so a
    /// wake-up during that first poll reaches the task that awaits the round next.
    fn join(&self, context: &mut Context<'_>) -> Joined {
        let mut next = super::cache::lock(&self.next);
        match &*next {
            Some(round) if !round.begun => Joined::Round(round.answer.clone()),
            Some(round) if round.answer.peek().is_none() => {
                let answer = self.round(next.take().map(|r| r.answer)).boxed().shared();
                *next = Some(Round {
                    begun: false,
                    answer: answer.clone(),
                });
                Joined::Round(answer)
            }
            _ => {
                let inner = self.inner.clone();
                let mut read = async move { inner.current_revision().await }.boxed();
                if let Poll::Ready(answer) = read.as_mut().poll(context) {
                    return Joined::Read(answer);
                }
                let answer = read.shared();
                *next = Some(Round {
                    begun: true,
                    answer: answer.clone(),
                });
                Joined::Round(answer)
            }
        }
    }

    /// A round: after `previous` ends, mark the round begun (under the lock joiners take, so a
    /// reader that joined came before it) and read.
    fn round(&self, previous: Option<Answer>) -> impl Future<Output = Result<Revision, StorageError>> + 'static {
        let (inner, next) = (self.inner.clone(), self.next.clone());
        async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            if let Some(round) = super::cache::lock(&next).as_mut() {
                // The slot holds this round: a newer one is made only once this one has begun.
                round.begun = true;
            }
            inner.current_revision().await
        }
    }
}
