//! Where the answer to a command goes: a waiting caller (a oneshot channel), or a client
//! connection's answer queue.
//!
//! The store loop answers a round's commands together (`StoreLoop::flush_replies`). A
//! oneshot per command costs a task on the network thread per request and a wake-up of it
//! per answer; a connection's queue is woken once when it turns non-empty, and its task
//! encodes everything queued into one write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pontoon_client::proto::raft_cmdpb::RaftCmdResponse;
use tokio::sync::{oneshot, Notify};

/// The answers of one client connection, queued by the store loop and written by the
/// connection's writer task. An entry without a response is a command the store dropped
/// unanswered (it stopped).
#[derive(Debug, Default)]
pub struct ConnAnswers {
    queue: Mutex<Vec<(u64, Option<RaftCmdResponse>)>>,
    notify: Notify,
    /// The connection is gone: nobody reads what is queued any more.
    closed: AtomicBool,
}

impl ConnAnswers {
    /// An empty queue.
    pub fn new() -> Arc<ConnAnswers> {
        Arc::new(ConnAnswers::default())
    }

    /// Moves everything queued so far to the end of `into`.
    pub fn take(&self, into: &mut Vec<(u64, Option<RaftCmdResponse>)>) {
        let mut q = self.queue.lock();
        if into.is_empty() {
            std::mem::swap(&mut *q, into);
        } else {
            into.append(&mut q);
        }
    }

    /// Waits until something was queued since the last [`ConnAnswers::take`] found it empty
    /// (or the connection was closed). May return without anything queued.
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Marks the connection gone: answers from now on are dropped (and the store loop skips
    /// abandoned reads); the waiting task wakes, takes what was queued before, and ends.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// True once [`ConnAnswers::close`]d.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn push(&self, request_id: u64, resp: Option<RaftCmdResponse>) {
        let was_empty = {
            let mut q = self.queue.lock();
            q.push((request_id, resp));
            q.len() == 1
        };
        // Whoever made the queue non-empty wakes the task; the later entries of the same
        // batch ride along with that wake-up (the task takes the whole queue).
        if was_empty {
            self.notify.notify_one();
        }
    }
}

enum ReplyTo {
    Caller(oneshot::Sender<RaftCmdResponse>),
    Conn(Arc<ConnAnswers>, u64),
}

/// Where the answer to one command goes. Exactly one answer: [`Reply::send`], or, dropped
/// unsent, "the store stopped" (a caller sees its channel closed; a connection writes an
/// error frame for the request).
pub struct Reply {
    to: Option<ReplyTo>,
}

impl Reply {
    /// Answers through a oneshot channel.
    pub fn caller(tx: oneshot::Sender<RaftCmdResponse>) -> Reply {
        Reply {
            to: Some(ReplyTo::Caller(tx)),
        }
    }

    /// Answers request `request_id` of the connection whose queue is `answers`.
    pub fn conn(answers: Arc<ConnAnswers>, request_id: u64) -> Reply {
        Reply {
            to: Some(ReplyTo::Conn(answers, request_id)),
        }
    }

    /// Whether nobody waits for the answer any more (the caller or the connection is gone).
    pub fn is_closed(&self) -> bool {
        match &self.to {
            Some(ReplyTo::Caller(tx)) => tx.is_closed(),
            Some(ReplyTo::Conn(answers, _)) => answers.is_closed(),
            None => true,
        }
    }

    /// Sends the answer; false if nobody waits for it any more.
    pub fn send(mut self, resp: RaftCmdResponse) -> bool {
        match self.to.take() {
            Some(ReplyTo::Caller(tx)) => tx.send(resp).is_ok(),
            Some(ReplyTo::Conn(answers, id)) => {
                if answers.is_closed() {
                    return false;
                }
                answers.push(id, Some(resp));
                true
            }
            None => false,
        }
    }
}

impl From<oneshot::Sender<RaftCmdResponse>> for Reply {
    fn from(tx: oneshot::Sender<RaftCmdResponse>) -> Reply {
        Reply::caller(tx)
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(ReplyTo::Conn(answers, id)) = self.to.take() {
            if !answers.is_closed() {
                answers.push(id, None);
            }
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.to {
            Some(ReplyTo::Caller(_)) => f.write_str("Reply::Caller"),
            Some(ReplyTo::Conn(_, id)) => write!(f, "Reply::Conn({id})"),
            None => f.write_str("Reply::Sent"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_dropped_replies_reach_the_queue_in_order() {
        let q = ConnAnswers::new();
        let a = Reply::conn(q.clone(), 7);
        let b = Reply::conn(q.clone(), 8);
        let resp = RaftCmdResponse::default();
        assert!(b.send(resp.clone()));
        drop(a);
        let mut got = Vec::new();
        q.take(&mut got);
        assert_eq!(got, vec![(8, Some(resp)), (7, None)]);
        q.take(&mut got);
        assert_eq!(
            got.len(),
            2,
            "take appends and the queue is empty after a take"
        );
        let c = Reply::conn(q.clone(), 9);
        assert!(!c.is_closed());
        q.close();
        assert!(c.is_closed());
        assert!(!c.send(RaftCmdResponse::default()));
        drop(Reply::conn(q.clone(), 10));
        q.take(&mut got);
        assert_eq!(got.len(), 2, "nothing is queued for a closed connection");
    }

    #[test]
    fn a_caller_gets_its_answer_or_a_closed_channel() {
        let (tx, mut rx) = oneshot::channel();
        let r: Reply = tx.into();
        assert!(r.send(RaftCmdResponse::default()));
        assert!(rx.try_recv().is_ok());
        let (tx, mut rx) = oneshot::channel::<RaftCmdResponse>();
        drop(Reply::caller(tx));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_first_answer_after_a_take_wakes_the_waiter() {
        let q = ConnAnswers::new();
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 3 {
                    q.take(&mut got);
                    if got.len() < 3 {
                        q.wait().await;
                    }
                }
                got.iter().map(|(id, _)| *id).collect::<Vec<_>>()
            })
        };
        for id in 1..=3 {
            assert!(Reply::conn(q.clone(), id).send(RaftCmdResponse::default()));
            tokio::task::yield_now().await;
        }
        let ids = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
