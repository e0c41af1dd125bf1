//! The watch cache: one backend watch per key prefix, fanned out to every watcher of that
//! prefix, with a window of recent events so watchers resume without touching the backend.
//!
//! As in k8s.io/apiserver's cacher, a watcher reads from the shared window at its own pace;
//! one that falls out of the window (or whose window was reset after the backend compacted
//! past it) ends with `Expired`, and the client re-lists. Reads, writes and resumes from before
//! the window go straight to the backend.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::watch;

use super::newest::Newest;
use super::{
    Derived, Event, EventKind, EventStream, KeyValue, RangeRequest, RangeResponse, Revision, Storage, StorageError,
};

/// Events each prefix's window holds by default.
pub const WINDOW: usize = 10_000;
/// Longest a list waits for the cache to catch up before it reads the backend instead.
pub const FRESH_WAIT: Duration = Duration::from_secs(3);
/// Longest wait between attempts to re-establish a failed backend watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A change shared by every watcher of its prefix, with a slot for what its reader derives
/// from it (decoded and encoded objects), so the fan-out works on each change once, not once
/// per watcher.
#[derive(Debug)]
pub struct Change {
    /// The storage event.
    pub event: Event,
    derived: Derived,
}

impl Change {
    fn new(event: Event) -> Arc<Change> {
        Arc::new(Change {
            event,
            derived: Derived::default(),
        })
    }

    /// What `derive` makes of the event, computed by the first caller only (`None` when it
    /// failed, or when an earlier caller derived another type).
    pub fn derived<T: Send + Sync + 'static>(&self, derive: impl FnOnce(&Event) -> Option<T>) -> Option<Arc<T>> {
        self.derived.get_or_derive(|| derive(&self.event))
    }
}

/// A stream of shared changes; an `Err` ends it.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<Arc<Change>, StorageError>> + Send>>;

/// Own writes the cache remembers, to vouch for lists without a census.
const JOURNAL: usize = 4096;

/// Revisions of writes made through the cache, and their keys.
type Journal = BTreeMap<Revision, String>;

/// A backend with a shared watch cache in front of it.
pub struct WatchCache {
    inner: Arc<dyn Storage>,
    window: usize,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
    /// The revisions of the latest writes made through this cache, and their keys.
    journal: Arc<Mutex<Journal>>,
    /// The store's newest revision, read once for every consistent read waiting on it.
    newest: Newest,
}

/// One prefix's backend watch and its window of recent events.
struct Feed {
    window: Mutex<Window>,
    /// Bumped on every change to the window, to wake watchers.
    changed: watch::Sender<u64>,
    /// The census under way (or the last one), which consistent reads arriving while it runs
    /// share: a thousand watches starting at once cost the store one read of the prefix.
    census: Mutex<Option<SharedCensus>>,
}

/// A census of a feed's prefix shared by the reads waiting on it: the revision it was taken
/// at, `None` when the backend takes none.
type SharedCensus = Shared<BoxFuture<'static, Result<Option<Revision>, StorageError>>>;

struct Window {
    /// Every event under the prefix with a revision above this is in `events`.
    from: Revision,
    /// Every event up to this revision has been received (the backend watch resumes here).
    progress: Revision,
    /// The state is the store's newest as of this revision: `progress`, or later when a
    /// [`Census`](super::Census) found no key written between the two. A consistent list
    /// while the store is still at this revision needs no census.
    vouched: Revision,
    events: VecDeque<Arc<Change>>,
    /// Every key under the prefix as of `progress`: what lists are served from.
    state: BTreeMap<String, KeyValue>,
    /// How many times the window was started over; a watcher of an earlier one has ended.
    epoch: u64,
}

impl Window {
    fn new(listed: RangeResponse) -> Window {
        Window {
            from: listed.revision,
            progress: listed.revision,
            vouched: listed.revision,
            events: VecDeque::new(),
            state: listed.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
            epoch: 0,
        }
    }

    /// One page of the state as a range answer read at `at`.
    fn page(&self, request: &RangeRequest, at: Revision) -> RangeResponse {
        let start = match &request.start_after {
            Some(key) => Bound::Excluded(key.as_str()),
            None => Bound::Included(request.prefix.as_str()),
        };
        let mut under = self
            .state
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(&request.prefix))
            .map(|(_, kv)| kv);
        let kvs: Vec<KeyValue> = match request.limit {
            0 => under.by_ref().cloned().collect(),
            limit => under.by_ref().take(limit).cloned().collect(),
        };
        RangeResponse {
            kvs,
            remaining: under.count() as u64,
            revision: at,
        }
    }
}

/// How current a list must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// As of the store's newest revision (`resourceVersion` unset): a consistent read.
    Consistent,
    /// As of this revision or later (`resourceVersion="0"`, `NotOlderThan`).
    NotOlderThan(Revision),
}

/// `m` locked, also after a panic elsewhere while it was held.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks (a window, the journal, the revision rounds)
    // leaves a usable state: each update is one push, insert or swap, at worst untrimmed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WatchCache {
    /// Put a watch cache holding `window` events per prefix in front of `inner`.
    pub fn new(inner: Arc<dyn Storage>, window: usize) -> Arc<Self> {
        Arc::new(WatchCache {
            newest: Newest::new(inner.clone()),
            inner,
            window: window.max(1),
            feeds: Mutex::new(HashMap::new()),
            journal: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// The backend behind the cache.
    pub fn backend(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    /// Start following `prefix` now, as kube-apiserver starts its cacher with the server, so
    /// that the first list, watch or GET does not pay for a range over the whole prefix. A
    /// store in this process needs no head start; an error leaves the start to the first read.
    pub async fn start(&self, prefix: &str) -> Result<(), StorageError> {
        if !self.inner.in_process() {
            self.feed(prefix).await?;
        }
        Ok(())
    }

    /// How many backend watches are open (one per watched prefix).
    pub fn feeds(&self) -> usize {
        lock(&self.feeds).len()
    }

    /// Changes under `prefix` after revision `after`, served from the shared window when it
    /// reaches back that far and from the backend otherwise.
    pub async fn changes(&self, prefix: &str, after: Revision) -> Result<ChangeStream, StorageError> {
        let feed = self.feed(prefix).await?;
        let (from, epoch) = {
            let window = lock(&feed.window);
            (window.from, window.epoch)
        };
        if after < from {
            // Older than the window: the backend's own history decides (it may say Expired).
            let stream = self.inner.watch(prefix, after).await?;
            return Ok(Box::pin(stream.map(|e| e.map(Change::new))));
        }
        Ok(Box::pin(watcher(feed, after, epoch)))
    }

    /// Keys under `request.prefix` (within the feed of `feed_prefix`) from the cache's state
    /// once it is as fresh as asked, as kube-apiserver's watch cache serves lists (KEP-2340).
    /// A read at a past revision (a paged list's next page) comes from the cache when nothing
    /// under the prefix changed since it, as upstream serves pages from its cache's snapshots;
    /// other past reads, and any the cache cannot vouch for within [`FRESH_WAIT`], go to the
    /// backend.
    pub async fn list(
        &self,
        feed_prefix: &str,
        request: &RangeRequest,
        freshness: Freshness,
    ) -> Result<RangeResponse, StorageError> {
        if !request.prefix.starts_with(feed_prefix) {
            return self.inner.range(request.clone()).await;
        }
        if let Some(at) = request.revision {
            let feed = lock(&self.feeds).get(feed_prefix).cloned();
            if let Some(feed) = feed {
                let window = lock(&feed.window);
                // The state holds every change up to `progress` and is the newest as of
                // `vouched`: nothing under the prefix changed between the two, so it is the
                // state at each revision there.
                if window.progress <= at && at <= window.vouched {
                    return Ok(window.page(request, at));
                }
            }
            return self.inner.range(request.clone()).await;
        }
        let feed = self.feed(feed_prefix).await?;
        if !self.catch_up(&feed, feed_prefix, freshness).await? {
            return self.inner.range(request.clone()).await;
        }
        let window = lock(&feed.window);
        Ok(window.page(request, window.vouched))
    }

    /// The object at `key` (within the feed of `feed_prefix`) as of the store's newest
    /// revision, from the cache's state once it is current (as [`list`](Self::list) reads),
    /// else from the backend. Concurrent reads share their revision reads, so under load a
    /// GET costs the backend a fraction of a round trip instead of one. A backend in this
    /// process answers itself: its read is cheaper than the cache's checks.
    pub async fn read(&self, feed_prefix: &str, key: &str) -> Result<Option<KeyValue>, StorageError> {
        if self.inner.in_process() || !key.starts_with(feed_prefix) {
            return self.inner.get(key).await;
        }
        let feed = self.feed(feed_prefix).await?;
        if !self.catch_up(&feed, feed_prefix, Freshness::Consistent).await? {
            return self.inner.get(key).await;
        }
        Ok(lock(&feed.window).state.get(key).cloned())
    }

    /// Wait until `feed`'s state is as fresh as asked: a consistent read takes the store's
    /// newest revision (a read shared with concurrent ones), then checks that every revision
    /// since the cache's last vouch was its own write or, failing that, that a
    /// [`Census`](super::Census) finds no key changed since the cache's progress; else it waits
    /// for the feed to catch up. `false` when it cannot vouch within [`FRESH_WAIT`].
    async fn catch_up(&self, feed: &Arc<Feed>, feed_prefix: &str, freshness: Freshness) -> Result<bool, StorageError> {
        let deadline = Instant::now() + FRESH_WAIT;
        loop {
            let mut changed = feed.changed.subscribe();
            let (progress, vouched) = {
                let window = lock(&feed.window);
                (window.progress, window.vouched)
            };
            let target = match freshness {
                Freshness::NotOlderThan(revision) if revision <= vouched => revision,
                // A consistent read (or one newer than the cache, say a revision another
                // resource's list returned): the store not having moved since the last vouch
                // costs one revision read; otherwise a census can vouch for the state.
                Freshness::NotOlderThan(_) | Freshness::Consistent => {
                    let newest = self.newest.revision().await?;
                    if newest < progress {
                        // The store is behind what the cache received: it went back (etcd
                        // restored from an older snapshot). Start over rather than serve the
                        // history it undid.
                        restart(&*self.inner, feed_prefix, feed, Some(&self.journal)).await?;
                        continue;
                    }
                    newest
                }
            };
            if target > vouched {
                // Every revision since the vouch was this server's own write (a store no one
                // else writes, the usual case): the feed needs only those under its prefix.
                // Otherwise a census tells whether anything under it changed since `progress`.
                if let Some(needed) = self.own_writes_since(feed_prefix, vouched, target) {
                    let mut window = lock(&feed.window);
                    if window.progress >= needed {
                        window.vouched = window.vouched.max(target);
                    }
                } else {
                    match self.census(feed, feed_prefix).await? {
                        None => return Ok(false),
                        // Joined a census begun before this read's target was read: take the
                        // next one.
                        Some(taken) if taken < target && Instant::now() < deadline => continue,
                        Some(_) => {}
                    }
                }
            }
            // Caught up: every event to `target` is in, or vouched for.
            if lock(&feed.window).vouched >= target {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !matches!(tokio::time::timeout(left, changed.changed()).await, Ok(Ok(()))) {
                return Ok(false);
            }
        }
    }

    /// The revision of a census of `feed`'s prefix, joined while one is under way or begun: a
    /// census finding no key written since the feed's progress, and as many keys as it holds,
    /// vouches for the feed up to the census's revision. `None` when the backend takes none.
    async fn census(&self, feed: &Arc<Feed>, feed_prefix: &str) -> Result<Option<Revision>, StorageError> {
        let shared = {
            let mut slot = lock(&feed.census);
            match &*slot {
                Some(census) if census.peek().is_none() => census.clone(),
                _ => {
                    let (inner, feed, prefix) = (self.inner.clone(), feed.clone(), feed_prefix.to_string());
                    let census = async move {
                        let progress = lock(&feed.window).progress;
                        let Some(census) = inner.census(&prefix, progress).await? else {
                            return Ok(None);
                        };
                        let mut window = lock(&feed.window);
                        if window.progress == progress
                            && !census.written_after
                            && census.keys == window.state.len() as u64
                        {
                            window.vouched = window.vouched.max(census.revision);
                        }
                        Ok(Some(census.revision))
                    }
                    .boxed()
                    .shared();
                    *slot = Some(census.clone());
                    census
                }
            }
        };
        shared.await
    }

    /// When every revision in `(after, to]` is a write made through this cache, the newest of
    /// them under `prefix` (0 when none is: the feed, current at `after`, still is): what a
    /// feed current at `after` must have received to be current at `to`. `None` when some
    /// revision there was written by someone else.
    fn own_writes_since(&self, prefix: &str, after: Revision, to: Revision) -> Option<Revision> {
        if to.saturating_sub(after) > JOURNAL as Revision {
            return None;
        }
        let journal = lock(&self.journal);
        // Not `after`: a feed is vouched for past its last event (`progress`), and with no
        // write under its prefix it never receives `after` itself.
        let mut needed = 0;
        let mut expected = after + 1;
        for (&revision, key) in journal.range(expected..=to) {
            if revision != expected {
                return None;
            }
            if key.starts_with(prefix) {
                needed = revision;
            }
            expected += 1;
        }
        (expected > to).then_some(needed)
    }

    /// Remember a write made through the cache.
    fn wrote(&self, written: &KeyValue) {
        let mut journal = lock(&self.journal);
        journal.insert(written.mod_revision, written.key.clone());
        while journal.len() > JOURNAL {
            journal.pop_first();
        }
    }

    async fn feed(&self, prefix: &str) -> Result<Arc<Feed>, StorageError> {
        if let Some(feed) = lock(&self.feeds).get(prefix) {
            return Ok(feed.clone());
        }
        let listed = self.inner.range(whole(prefix)).await?;
        let mut feeds = lock(&self.feeds);
        // Another caller may have started the feed while we read the prefix.
        if let Some(feed) = feeds.get(prefix) {
            return Ok(feed.clone());
        }
        let feed = Arc::new(Feed {
            window: Mutex::new(Window::new(listed)),
            changed: watch::channel(0).0,
            census: Mutex::new(None),
        });
        feeds.insert(prefix.to_string(), feed.clone());
        tokio::spawn(follow(
            self.inner.clone(),
            prefix.to_string(),
            Arc::downgrade(&feed),
            self.window,
            self.journal.clone(),
        ));
        Ok(feed)
    }
}

/// A range over all of `prefix`, newest.
fn whole(prefix: &str) -> RangeRequest {
    RangeRequest {
        prefix: prefix.to_string(),
        ..Default::default()
    }
}

/// Keep `feed`'s window filled from the backend until the feed is dropped.
async fn follow(
    inner: Arc<dyn Storage>,
    prefix: String,
    feed: Weak<Feed>,
    capacity: usize,
    journal: Arc<Mutex<Journal>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(progress) = feed.upgrade().map(|f| lock(&f.window).progress) else {
            return;
        };
        let failure = match inner.follow(&prefix, progress).await {
            Ok(mut stream) => {
                backoff = Duration::from_millis(100);
                loop {
                    let Some(item) = stream.next().await else {
                        break StorageError::Unavailable("backend watch ended".into());
                    };
                    let Some(f) = feed.upgrade() else { return };
                    match item {
                        Ok(event) => f.push(event, capacity),
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e,
        };
        let Some(f) = feed.upgrade() else { return };
        match failure {
            // The backend compacted past what we hold: start over; watchers behind must re-list.
            StorageError::Expired { .. } => {
                let _ = restart(&*inner, &prefix, &f, None).await;
            }
            e => {
                tracing::warn!(prefix, "watch cache: backend watch failed, retrying: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // An etcd restored from an older snapshot answers again with revisions below
                // ours: a watch from our progress would wait for them, then mix two histories.
                let progress = lock(&f.window).progress;
                if inner.current_revision().await.is_ok_and(|newest| newest < progress) {
                    tracing::warn!(prefix, progress, "watch cache: the store went back; re-listing");
                    let _ = restart(&*inner, &prefix, &f, Some(&journal)).await;
                }
            }
        }
    }
}

/// Start `feed` over from a fresh read of `prefix`, when its window no longer follows the
/// backend: the backend compacted past it, or went back (`journal` given: the revisions of
/// this cache's own writes may now name others' writes, so they are forgotten). Watchers of the
/// old window end with `Expired` and re-list.
async fn restart(
    inner: &dyn Storage,
    prefix: &str,
    feed: &Feed,
    journal: Option<&Mutex<Journal>>,
) -> Result<(), StorageError> {
    let listed = inner.range(whole(prefix)).await?;
    if let Some(journal) = journal {
        lock(journal).clear();
    }
    feed.reset(listed);
    Ok(())
}

impl Feed {
    /// Take in one event of the backend's [`follow`](Storage::follow): the value before it,
    /// and a deleted key's last value, come from the state held here when the event has none.
    fn push(&self, mut event: Event, capacity: usize) {
        let mut window = lock(&self.window);
        let revision = event.kv.mod_revision;
        if revision <= window.progress {
            return; // a replay of what we hold, after a re-established watch
        }
        window.progress = revision;
        window.vouched = window.vouched.max(revision);
        let held = match event.kind {
            EventKind::Put => window.state.insert(event.kv.key.clone(), event.kv.clone()),
            EventKind::Delete => window.state.remove(&event.kv.key),
        };
        if let Some(held) = held {
            if event.kind == EventKind::Delete && event.prev.is_none() {
                event.kv = KeyValue {
                    mod_revision: revision,
                    ..held.clone()
                };
            }
            event.prev.get_or_insert(held);
        }
        window.events.push_back(Change::new(event));
        while window.events.len() > capacity {
            if let Some(evicted) = window.events.pop_front() {
                window.from = evicted.event.kv.mod_revision;
            }
        }
        drop(window);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Start over from a fresh read of the prefix, ending the watchers of the old window.
    fn reset(&self, listed: RangeResponse) {
        let mut window = lock(&self.window);
        let epoch = window.epoch + 1;
        *window = Window {
            epoch,
            ..Window::new(listed)
        };
        drop(window);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// One watcher's view of a feed from `epoch` of its window: everything after `position`, in
/// order, until the window is started over.
fn watcher(
    feed: Arc<Feed>,
    position: Revision,
    epoch: u64,
) -> impl Stream<Item = Result<Arc<Change>, StorageError>> + Send {
    let changed = feed.changed.subscribe();
    let state = (feed, changed, position, VecDeque::<Arc<Change>>::new(), false);
    futures::stream::unfold(
        state,
        move |(feed, mut changed, mut position, mut pending, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(change) = pending.pop_front() {
                    return Some((Ok(change), (feed, changed, position, pending, false)));
                }
                // Mark seen before reading so a push after the read wakes us.
                changed.borrow_and_update();
                {
                    let window = lock(&feed.window);
                    // Behind the window, or watching one that was started over (after a
                    // compaction or the store going back): the client must re-list.
                    if position < window.from || window.epoch != epoch {
                        let error = StorageError::Expired {
                            requested: position,
                            compacted: window.from,
                        };
                        drop(window);
                        return Some((Err(error), (feed, changed, position, pending, true)));
                    }
                    let start = window.events.partition_point(|e| e.event.kv.mod_revision <= position);
                    pending.extend(window.events.range(start..).cloned());
                    if let Some(last) = pending.back() {
                        position = last.event.kv.mod_revision;
                    }
                }
                if pending.is_empty() && changed.changed().await.is_err() {
                    return None;
                }
            }
        },
    )
}

#[async_trait]
impl Storage for WatchCache {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        self.inner.get(key).await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StorageError> {
        self.inner.range(request).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StorageError> {
        let written = self.inner.create(key, value).await?;
        self.wrote(&written);
        Ok(written)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StorageError> {
        let written = self.inner.update(key, value, expected).await?;
        self.wrote(&written);
        Ok(written)
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue, StorageError> {
        let deleted = self.inner.delete(key, expected).await?;
        self.wrote(&deleted);
        Ok(deleted)
    }

    /// Watches through the cache; the stream ends after its first error, like every backend's.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError> {
        let changes = self.changes(prefix, after).await?;
        Ok(super::end_after_error(changes.map(|c| c.map(|c| c.event.clone()))))
    }

    async fn current_revision(&self) -> Result<Revision, StorageError> {
        self.inner.current_revision().await
    }

    async fn census(&self, prefix: &str, after: Revision) -> Result<Option<super::Census>, StorageError> {
        self.inner.census(prefix, after).await
    }

    async fn count(&self, prefix: &str) -> Result<u64, StorageError> {
        self.inner.count(prefix).await
    }

    async fn ready(&self) -> Result<(), StorageError> {
        self.inner.ready().await
    }

    fn in_process(&self) -> bool {
        self.inner.in_process()
    }
}
