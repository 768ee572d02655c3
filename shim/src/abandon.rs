//! Connections of requests that gave up. A request abandoned mid-query (its time limit
//! passed, or its client went away) drops its handler's future; a pooled connection dropped
//! then would go back to the pool with the query still running on the server, and the next
//! request to take it would queue behind that query. So a connection taken while a request
//! is handled knows that request: dropped while the request's future is being polled, it is
//! an ordinary return to the pool; dropped at any other time, the request was abandoned, and
//! the connection leaves the pool, its query is cancelled on the server, and it is closed.
//! (Taken out of the pool first, so the cancel can never reach another request's query.)

use deadpool_postgres::{Object, Pool, PoolError, Timeouts};
use std::cell::RefCell;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long the cancel of an abandoned query may take.
const CANCEL_LIMIT: Duration = Duration::from_secs(10);

/// One request being handled; compared by address.
#[derive(Default)]
struct RequestMark;

thread_local! {
    /// The request whose future this thread is polling right now.
    static POLLING: RefCell<Option<Arc<RequestMark>>> = const { RefCell::new(None) };
}

/// Wraps a request's handling so that connections taken in it know when it is abandoned.
pub fn watched<F: Future>(future: F) -> Watched<F> {
    Watched {
        inner: Box::pin(future),
        mark: Arc::new(RequestMark),
    }
}

pub struct Watched<F> {
    inner: Pin<Box<F>>,
    mark: Arc<RequestMark>,
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let previous = POLLING.replace(Some(self.mark.clone()));
        // Restores the previous mark even if the handler panics.
        let _restore = Restore(previous);
        self.inner.as_mut().poll(cx)
    }
}

struct Restore(Option<Arc<RequestMark>>);

impl Drop for Restore {
    fn drop(&mut self) {
        POLLING.set(self.0.take());
    }
}

/// A pooled connection that is cancelled and closed, instead of returned to the pool, when
/// the request that took it is abandoned.
pub struct Connection {
    object: Option<Object>,
    request: Option<Arc<RequestMark>>,
}

/// Takes a connection from `pool` for the request being polled (if any).
pub async fn connection(pool: &Pool) -> Result<Connection, PoolError> {
    connection_within(pool, &pool.timeouts()).await
}

/// As [`connection`], with limits on waiting for a free connection, connecting and
/// recycling (the pool must have a runtime for them).
pub async fn connection_within(pool: &Pool, timeouts: &Timeouts) -> Result<Connection, PoolError> {
    let object = pool.timeout_get(timeouts).await?;
    Ok(Connection {
        object: Some(object),
        request: POLLING.with_borrow(Clone::clone),
    })
}

impl Deref for Connection {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.object
            .as_ref()
            .expect("a connection is only taken when dropped")
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Object {
        self.object
            .as_mut()
            .expect("a connection is only taken when dropped")
    }
}

impl Connection {
    /// Cancels its query and closes it, instead of returning it to the pool: for a query
    /// given up on while the request goes on (a replica that did not answer in time).
    pub fn discard(mut self) {
        if let Some(object) = self.object.take() {
            abandon(object);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let (Some(object), Some(request)) = (self.object.take(), self.request.take()) else {
            return;
        };
        let polled = POLLING.with_borrow(|p| p.as_ref().is_some_and(|p| Arc::ptr_eq(p, &request)));
        if !polled {
            abandon(object);
        }
    }
}

fn abandon(object: Object) {
    let client = Object::take(object);
    let cancel = client.cancel_token();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            // A stopped server accepts the cancel's connection and never reads it: the task
            // must not wait for it forever.
            match tokio::time::timeout(CANCEL_LIMIT, cancel.cancel_query(tokio_postgres::NoTls)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("could not cancel the query of an abandoned request: {e}"),
                Err(_) => tracing::warn!("the server did not take the cancel of an abandoned request's query within {} s", CANCEL_LIMIT.as_secs()),
            }
            drop(client);
        });
    }
}
