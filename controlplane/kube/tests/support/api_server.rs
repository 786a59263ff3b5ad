//! A loopback HTTP/1.1 server that serves the list and watch requests kube-runtime's
//! watcher sends for Services, EndpointSlices and Nodes.
//!
//! It keeps objects per kind with one cluster-wide resourceVersion counter, as etcd does.
//! A list returns every object (in the request's namespace, if any) with the current
//! resourceVersion. A watch (`watch=true&resourceVersion=N`) answers with a chunked body of
//! one JSON event per line: first the recorded events newer than N, then a BOOKMARK at the
//! current version, then live events as the test changes objects. A watch from a version
//! older than the last compaction gets an ERROR event with code 410, as the real API
//! server sends it inside the stream.
//!
//! Label and field selectors, `limit` and `continue` are recorded but not applied: a list
//! always fits in one page.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Maximum size of a request head. kube's requests are far shorter.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Time a client gets to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The kinds the server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl Kind {
    fn from_plural(plural: &str) -> Option<Kind> {
        match plural {
            "services" => Some(Kind::Service),
            "endpointslices" => Some(Kind::EndpointSlice),
            "nodes" => Some(Kind::Node),
            _ => None,
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }
}

/// A request the server received, for assertions on what kube sent.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub kind: Option<Kind>,
    pub watch: bool,
    pub query: BTreeMap<String, String>,
}

enum WatchMessage {
    Event(String),
    /// Ends the response, as the API server does when `timeoutSeconds` runs out.
    End,
}

struct Watch {
    kind: Kind,
    namespace: Option<String>,
    sender: mpsc::UnboundedSender<WatchMessage>,
}

#[derive(Default)]
struct State {
    resource_version: u64,
    objects: BTreeMap<(Kind, String), Value>,
    /// Events that watches can replay: (kind, resourceVersion, namespace, event line).
    history: Vec<(Kind, u64, Option<String>, String)>,
    /// Per kind, the oldest resourceVersion a watch may start from.
    compacted: BTreeMap<Kind, u64>,
    watches: Vec<Watch>,
    requests: Vec<RecordedRequest>,
    /// Per kind, how many of the next list requests get 500 Internal Server Error.
    failing_lists: BTreeMap<Kind, u32>,
}

/// The running server. Dropping it stops accepting and ends every open watch.
pub struct FakeApiServer {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    accept_task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.lock().watches.clear();
    }
}

impl FakeApiServer {
    /// Binds to an ephemeral port on 127.0.0.1 and starts serving.
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));

        FakeApiServer {
            address,
            state,
            accept_task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Creates or replaces an object and sends ADDED or MODIFIED to open watches.
    pub fn apply(&self, object: Value) {
        let mut state = self.lock();
        let (kind, key, object) = state.store(object);
        let event_type = if state.objects.insert((kind, key), object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.publish(kind, event_type, object);
    }

    /// Changes an object without any watch event, as if the event had been lost to
    /// compaction; only a re-list shows the change.
    pub fn apply_silently(&self, object: Value) {
        let mut state = self.lock();
        let (kind, key, object) = state.store(object);
        state.objects.insert((kind, key), object);
    }

    /// Deletes an object and sends DELETED to open watches.
    pub fn delete(&self, kind: Kind, namespace: Option<&str>, name: &str) {
        let mut state = self.lock();
        let key = object_key(namespace, name);
        let mut object = state
            .objects
            .remove(&(kind, key))
            .unwrap_or_else(|| panic!("no {} {name} to delete", kind.name()));
        state.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        state.publish(kind, "DELETED", object);
    }

    /// Compacts the history of `kind` and ends its open watches with an in-stream
    /// ERROR 410 Gone, which makes kube-runtime list again.
    pub fn expire_watches(&self, kind: Kind) {
        let mut state = self.lock();
        let oldest = state.resource_version + 1;
        state.compacted.insert(kind, oldest);
        state.history.retain(|(event_kind, ..)| *event_kind != kind);

        let line = gone_event(oldest);
        for watch in state.watches.iter().filter(|watch| watch.kind == kind) {
            let _ = watch.sender.send(WatchMessage::Event(line.clone()));
            let _ = watch.sender.send(WatchMessage::End);
        }
        state.watches.retain(|watch| watch.kind != kind);
    }

    /// Sends a BOOKMARK at the current resourceVersion on every open watch.
    pub fn send_bookmarks(&self) {
        let state = self.lock();
        for watch in &state.watches {
            let line = bookmark_event(watch.kind, state.resource_version);
            let _ = watch.sender.send(WatchMessage::Event(line));
        }
    }

    /// Ends every open watch of `kind` normally, as a watch's timeout does.
    pub fn end_watches(&self, kind: Kind) {
        let mut state = self.lock();
        for watch in state.watches.iter().filter(|watch| watch.kind == kind) {
            let _ = watch.sender.send(WatchMessage::End);
        }
        state.watches.retain(|watch| watch.kind != kind);
    }

    /// Makes the next `count` list requests for `kind` fail with 500 Internal Server Error.
    pub fn fail_lists(&self, kind: Kind, count: u32) {
        self.lock().failing_lists.insert(kind, count);
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Number of watches of `kind` currently open.
    pub fn open_watches(&self, kind: Kind) -> usize {
        let state = self.lock();
        state
            .watches
            .iter()
            .filter(|watch| watch.kind == kind && !watch.sender.is_closed())
            .count()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }
}

impl State {
    /// Gives `object` the next resourceVersion and returns its kind and key.
    fn store(&mut self, mut object: Value) -> (Kind, String, Value) {
        let kind = match object["kind"].as_str() {
            Some("Service") => Kind::Service,
            Some("EndpointSlice") => Kind::EndpointSlice,
            Some("Node") => Kind::Node,
            other => panic!("the fake API server does not serve kind {other:?}"),
        };
        let metadata = &object["metadata"];
        let name = metadata["name"]
            .as_str()
            .expect("object without metadata.name");
        let key = object_key(metadata["namespace"].as_str(), name);

        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        (kind, key, object)
    }

    fn publish(&mut self, kind: Kind, event_type: &str, object: Value) {
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
        let line = json!({ "type": event_type, "object": object }).to_string();
        self.history
            .push((kind, self.resource_version, namespace.clone(), line.clone()));

        for watch in self.watches.iter().filter(|watch| watch.kind == kind) {
            if watch.namespace.is_none() || watch.namespace == namespace {
                let _ = watch.sender.send(WatchMessage::Event(line.clone()));
            }
        }
    }

    fn list_body(&self, kind: Kind, namespace: Option<&str>) -> String {
        let items: Vec<&Value> = self
            .objects
            .iter()
            .filter(|((object_kind, _), _)| *object_kind == kind)
            .map(|(_, object)| object)
            .filter(|object| in_namespace(object, namespace))
            .collect();

        json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.name()),
            "metadata": { "resourceVersion": self.resource_version.to_string() },
            "items": items,
        })
        .to_string()
    }
}

fn object_key(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or(""))
}

fn in_namespace(object: &Value, namespace: Option<&str>) -> bool {
    namespace.is_none() || object["metadata"]["namespace"].as_str() == namespace
}

fn bookmark_event(kind: Kind, resource_version: u64) -> String {
    json!({
        "type": "BOOKMARK",
        "object": {
            "apiVersion": kind.api_version(),
            "kind": kind.name(),
            "metadata": { "resourceVersion": resource_version.to_string() },
        },
    })
    .to_string()
}

fn gone_event(oldest: u64) -> String {
    json!({
        "type": "ERROR",
        "object": {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: oldest available is {oldest}"),
            "reason": "Expired",
            "code": 410,
        },
    })
    .to_string()
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    // Ends when the server is dropped, which aborts this task.
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Such as EMFILE: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(serve_connection(stream, Arc::clone(&state)));
    }
}

/// Parsed request line: the resource path segments and the query.
struct Target {
    kind: Option<Kind>,
    namespace: Option<String>,
    query: BTreeMap<String, String>,
}

/// Serves one request and closes the connection, which every response announces with
/// `Connection: close`.
async fn serve_connection(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let Some(target) = read_request(&mut stream).await else {
        return;
    };
    let watch = target
        .query
        .get("watch")
        .is_some_and(|value| value == "true" || value == "1");
    state.lock().unwrap().requests.push(RecordedRequest {
        kind: target.kind,
        watch,
        query: target.query.clone(),
    });

    let Some(kind) = target.kind else {
        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#;
        let _ = write_response(&mut stream, "404 Not Found", body).await;
        return;
    };
    if watch {
        serve_watch(stream, &state, kind, target).await;
        return;
    }

    let (status, body) = {
        let mut state = state.lock().unwrap();
        match state
            .failing_lists
            .get_mut(&kind)
            .filter(|count| **count > 0)
        {
            Some(count) => {
                *count -= 1;
                let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":500}"#;
                ("500 Internal Server Error", body.to_owned())
            }
            None => ("200 OK", state.list_body(kind, target.namespace.as_deref())),
        }
    };
    let _ = write_response(&mut stream, status, &body).await;
}

async fn serve_watch(mut stream: TcpStream, state: &Mutex<State>, kind: Kind, target: Target) {
    let since: u64 = target
        .query
        .get("resourceVersion")
        .and_then(|version| version.parse().ok())
        .unwrap_or(0);
    let (sender, mut receiver) = mpsc::unbounded_channel();

    // Replay and registration happen under one lock, so no event falls between them.
    {
        let mut state = state.lock().unwrap();
        let oldest = state.compacted.get(&kind).copied().unwrap_or(0);
        if since < oldest {
            let _ = sender.send(WatchMessage::Event(gone_event(oldest)));
            let _ = sender.send(WatchMessage::End);
        } else {
            for (event_kind, version, namespace, line) in &state.history {
                let wanted = target.namespace.is_none() || target.namespace == *namespace;
                if *event_kind == kind && *version > since && wanted {
                    let _ = sender.send(WatchMessage::Event(line.clone()));
                }
            }
            let bookmark = bookmark_event(kind, state.resource_version);
            let _ = sender.send(WatchMessage::Event(bookmark));
            state.watches.push(Watch {
                kind,
                namespace: target.namespace.clone(),
                sender,
            });
        }
    }

    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    // Ends on WatchMessage::End, when the server drops the sender, or when the client
    // goes away and a write fails.
    while let Some(WatchMessage::Event(line)) = receiver.recv().await {
        let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let _ = stream.shutdown().await;
}

async fn write_response(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads the request head (GET requests have no body) and parses its target.
async fn read_request(stream: &mut TcpStream) -> Option<Target> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];

    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_BYTES {
            return None;
        }
        let read = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buffer)).await;
        match read {
            Ok(Ok(count)) if count > 0 => head.extend_from_slice(&buffer[..count]),
            _ => return None,
        }
    }

    let head = String::from_utf8(head).ok()?;
    let request_line = head.lines().next()?;
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    assert_eq!(
        method, "GET",
        "discovery only lists and watches: {request_line}"
    );
    Some(parse_target(target))
}

fn parse_target(target: &str) -> Target {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect();

    // /api/v1[/namespaces/NS]/PLURAL or /apis/GROUP/VERSION[/namespaces/NS]/PLURAL
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let kind = segments.last().and_then(|plural| Kind::from_plural(plural));
    let namespace = segments
        .iter()
        .position(|segment| *segment == "namespaces")
        .and_then(|index| segments.get(index + 1))
        .map(|namespace| namespace.to_string());

    Target {
        kind,
        namespace,
        query,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;

    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[index], escaped) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                index += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
