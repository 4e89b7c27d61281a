//! The client's control session after the build was accepted, with the
//! receiving half in a task of its own ([`Link::split`]): the session loop
//! waits on a channel, so a Ctrl-C in the middle of a frame never leaves
//! half a frame read and the stream out of step.

use imgfarm_common::proto::Message;
use imgfarm_worker::link::{Link, LinkError, LinkHandle, LinkSender};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Messages buffered between the reader task and the session loop.
const BUFFER: usize = 256;

/// A control session split into a sender, a reader task and the handle
/// for blob streams.
#[derive(Debug)]
pub struct Control {
    handle: LinkHandle,
    sender: LinkSender,
    rx: mpsc::Receiver<Result<Option<Message>, LinkError>>,
    reader: JoinHandle<()>,
}

impl Control {
    /// Splits `link` and starts reading it. Needs a tokio runtime.
    pub fn start(link: Link) -> Self {
        let (handle, sender, mut receiver) = link.split();
        let (tx, rx) = mpsc::channel(BUFFER);
        let reader = tokio::spawn(async move {
            loop {
                let r = receiver.recv().await;
                let last = !matches!(r, Ok(Some(_)));
                if tx.send(r).await.is_err() || last {
                    break;
                }
            }
        });
        Self {
            handle,
            sender,
            rx,
            reader,
        }
    }

    /// The next message; `Ok(None)` when the coordinator ended the session.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Result<Option<Message>, LinkError> {
        self.rx.recv().await.unwrap_or(Ok(None))
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        self.sender.send(msg).await
    }

    /// Blob streams of the same connection.
    pub fn handle(&self) -> &LinkHandle {
        &self.handle
    }

    /// Ends the session politely.
    pub async fn close(mut self) {
        self.sender.bye().await;
        self.reader.abort();
        self.handle.close().await;
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
