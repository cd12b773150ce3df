"""A generic list+watch of one collection, as client-go's reflector runs it.

A :class:`Reflector` knows nothing of Secrets or Namespaces: it lists and watches through a
list function of the official client and hands the raw objects to a :class:`Handler`
(``cluster/watchers.py`` has the resource-specific ones). In a thread of its own:

1. a paginated list (``limit``/``continue``) of the whole collection, parsed from the raw
   JSON (orjson) page by page, given to ``handler.replace`` as one stream of items;
2. a watch from the list's ``resourceVersion`` with ``allowWatchBookmarks``; every event
   goes to ``handler.apply``, and every event or bookmark moves the resourceVersion on and
   proves the stream alive (``on_alive``);
3. when the watch ends: at the server's ``timeoutSeconds`` re-watch at once; on 410 Gone
   (an ERROR event with a ``Status`` of code 410, or an expired continue token) list
   again; on any other error or an early close retry after the per-stream exponential
   backoff with jitter (``cluster/workqueue.py``). A client-side read timeout slightly
   above ``timeoutSeconds`` turns a half-open connection into an error instead of a
   frozen picture.

Objects are read as plain dicts (no model deserialisation) and never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from webhook.cluster.apiclient import CONNECT_TIMEOUT, GONE, StoppedError, cut, describe
from webhook.cluster.pacing import ListPacer
from webhook.cluster.workqueue import ItemExponentialBackoff
from webhook.config import Settings

log = logging.getLogger(__name__)

# A watch that ends sooner than this without a single event counts as a failure (backoff),
# so a server that accepts and closes at once cannot make the loop spin.
_MIN_HEALTHY_WATCH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """Tuning of every list+watch stream (Settings: --watch-timeout-seconds and the rest)."""

    # The server ends each watch after this; a re-watch from the last resourceVersion is
    # free. 5 minutes is client-go's minimum (it picks 5 to 10 at random).
    watch_timeout_seconds: int = 300
    # Items per list page: client-go's pager default. Bounds the memory of one response.
    page_size: int = 500
    # Read timeout of one list page (a read, not the whole response): a page of 500
    # secrets is under a megabyte, so a minute without a byte means the connection is dead.
    list_read_timeout: float = 60.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.watch_timeout_seconds < 1:
            raise ValueError("watch_timeout_seconds must be at least 1")
        if self.page_size < 1:
            raise ValueError("page_size must be at least 1")
        if self.backoff_cap_seconds <= 0 or self.backoff_base_seconds <= 0:
            raise ValueError("backoff_base_seconds and backoff_cap_seconds must be positive")
        if self.list_read_timeout <= 0:
            raise ValueError("list_read_timeout must be positive")

    @classmethod
    def of(cls, settings: Settings) -> WatchOptions:
        """The options `serve` runs with (--watch-timeout-seconds, --list-page-size)."""
        return cls(
            watch_timeout_seconds=settings.watch_timeout_seconds, page_size=settings.list_page_size
        )

    @property
    def watch_read_timeout(self) -> float:
        """The server closes the watch at timeoutSeconds; a connection silent for longer
        (plus slack for a loaded server) is half-open: drop it and reconnect."""
        return self.watch_timeout_seconds + min(10.0, self.watch_timeout_seconds / 2)


class Handler(Protocol):
    """What one collection's objects become (cluster/watchers.py)."""

    def replace(self, items: Iterable[Mapping[str, Any]]) -> int:
        """Replace the whole view with a full list's items (consumed once); how many."""
        ...

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        """One ADDED, MODIFIED or DELETED event."""
        ...


class _ExpiredError(Exception):
    """410 Gone: the resourceVersion or continue token is too old; list again."""


class _RawWatch(k8s_watch.Watch):
    """The client's Watch, yielding events as plain dicts.

    Without a return type Watch skips the model deserialisation of each event (the store
    needs a few fields, and the models are slow); ``event["raw_object"]`` is the object as
    the server sent it. ERROR events still raise ApiException with the Status code.
    """

    def get_return_type(self, func: Any) -> None:
        return None


def _resource_version(obj: Any) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return rv if isinstance(rv, str) and rv else None


class Reflector:
    """One list+watch stream in a thread of its own (a daemon).

    ``on_listed(first)`` runs after each full list is handed over, ``on_alive()`` after each
    event or bookmark and after a watch that ran its whole timeout (a reconnect proves
    nothing: a 410 may follow); ``on_page()`` after each list page is parsed and again after
    it has been handed over (``cluster/heap.py``: the parsed page and the new picture leave
    the collector's reach page by page);
    ``on_restart(reason)`` after each end of a watch (``timeout``, ``closed``,
    ``expired``, ``error``); ``staleness()`` is only logged. A re-list (not the first list)
    is handed over through ``pacer`` (``cluster/pacing.py``): the event loop gets the GIL in
    stretches while it runs.
    """

    def __init__(
        self,
        key: str,
        list_fn: Callable[..., Any],
        handler: Handler,
        *,
        field_selector: str | None = None,
        options: WatchOptions,
        on_listed: Callable[[bool], None],
        on_alive: Callable[[], None],
        on_restart: Callable[[str], None],
        staleness: Callable[[], float | None] = lambda: None,
        on_page: Callable[[], None] = lambda: None,
        pacer: ListPacer | None = None,
    ) -> None:
        self.key = key
        self._list_fn = list_fn
        self._handler = handler
        self._field_selector = field_selector
        self._options = options
        self._on_listed = on_listed
        self._on_alive = on_alive
        self._on_restart = on_restart
        self._staleness = staleness
        self._on_page = on_page
        self._pacer = pacer or ListPacer()
        self._backoff: ItemExponentialBackoff[str] = ItemExponentialBackoff(
            options.backoff_base_seconds, options.backoff_cap_seconds, jitter=0.5
        )
        self._stop = threading.Event()
        self._io_lock = threading.Lock()  # guards _response against stop()
        self._response: Any = None  # the in-flight urllib3 response, cut by stop()
        self._thread: threading.Thread | None = None
        self.synced = False  # a full list has been handed over at least once
        self.healthy = False  # the last request succeeded (cleared by an error or a 410)
        self.connected = False  # the current watch got its response (the server is back)

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"reflector {self.key} started twice")
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.key}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Stop at once: the in-flight request is cut, a backoff sleep ends."""
        self._stop.set()
        with self._io_lock:
            if self._response is not None:
                cut(self._response)

    def join(self, timeout: float) -> bool:
        """Wait for the thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        rv: str | None = None
        reason = ""
        while not self._stop.is_set():
            delay = 0.0
            last_reason = reason
            self.connected = False
            try:
                if rv is None:
                    rv = self._list()
                started = time.monotonic()
                rv, events = self._watch(rv)
                lasted = time.monotonic() - started
                if lasted + 0.5 >= self._options.watch_timeout_seconds:
                    reason = "timeout"  # the server's timeoutSeconds: the normal case
                    self._backoff.forget(self.key)
                    self._on_alive()  # a whole watch without a 410: fresh until now
                elif events or lasted >= _MIN_HEALTHY_WATCH_SECONDS:
                    reason = "closed"
                    self._backoff.forget(self.key)
                else:
                    reason = "closed"
                    delay = self._backoff.when(self.key)
                log.debug(
                    "watch ended",
                    extra={"stream": self.key, "reason": reason, "events": events, "rv": rv},
                )
            except StoppedError:
                break
            except _ExpiredError:
                # The server answered, so any outage is over: the first re-list after a 410
                # is immediate whatever failed before; only repeated 410s back off. The
                # picture is stale until the re-list lands (the age keeps growing).
                rv = None
                reason = "expired"
                self.healthy = False
                if last_reason != "expired":
                    self._backoff.forget(self.key)
                delay = self._backoff.when(self.key)
                if self._backoff.num_requeues(self.key) == 1:
                    delay = 0.0
                log.info(
                    "resourceVersion expired (410 Gone): listing again",
                    extra={
                        "stream": self.key,
                        "staleness_seconds": self._age(),
                        "retry_in_seconds": round(delay, 3),
                    },
                )
            except Exception as exc:
                if self._stop.is_set():
                    break
                self.healthy = False
                reason = "error"
                if self.connected:  # a live watch ended the outage: start the backoff over
                    self._backoff.forget(self.key)
                delay = self._backoff.when(self.key)
                log.warning(
                    "list/watch failed: retrying with backoff",
                    extra={
                        "stream": self.key,
                        "error": describe(exc),
                        "failures": self._backoff.num_requeues(self.key),
                        "resource_version": rv,
                        "staleness_seconds": self._age(),
                    },
                )
            self._on_restart(reason)
            if delay and self._stop.wait(delay):
                break

    def _age(self) -> float | None:
        age = self._staleness()
        return None if age is None else round(age, 1)

    # ---- requests --------------------------------------------------------------------------
    def _adopt(self, response: Any) -> None:
        """Remember the in-flight response so stop() can cut it."""
        with self._io_lock:
            if self._stop.is_set():
                cut(response)
                response.release_conn()
                raise StoppedError
            self._response = response

    def _release(self) -> None:
        with self._io_lock:
            self._response = None

    def _pages(self) -> Iterator[tuple[str | None, list[Any]]]:
        """(resourceVersion, items) of each page of a consistent paginated list."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "limit": self._options.page_size,
                "_preload_content": False,
                "_request_timeout": (CONNECT_TIMEOUT, self._options.list_read_timeout),
            }
            if self._field_selector:
                kwargs["field_selector"] = self._field_selector
            if token:
                kwargs["_continue"] = token
            try:
                response = self._list_fn(**kwargs)
            except ApiException as exc:
                if exc.status == GONE:
                    # An expired continue token: the snapshot is gone. The token in the
                    # 410 would give an inconsistent list; start over for a consistent one.
                    raise _ExpiredError from exc
                raise
            self._adopt(response)
            try:
                body = orjson.loads(response.data)
            finally:
                self._release()
                response.release_conn()
            self._on_page()  # the parsed page, too, out of the collector's walks
            meta = body.get("metadata") or {}
            items = body.get("items") or []
            del body  # one page alive at a time: the next is parsed after this one is gone
            token = meta.get("continue") or None
            yield meta.get("resourceVersion"), items
            del items
            if not token:
                return

    def _list(self) -> str:
        """List the whole collection and hand it over in one step; its resourceVersion."""
        started = time.monotonic()
        rv: str | None = None

        def items() -> Iterator[Mapping[str, Any]]:
            nonlocal rv
            for page_rv, page in self._pages():
                rv = rv or page_rv
                yield from page
                del page
                self._on_page()

        first = not self.synced
        count = self._handler.replace(items() if first else self._pacer.paced(items()))
        if rv is None:
            raise ValueError("list response without metadata.resourceVersion")
        self.synced = True
        self.healthy = True
        self._on_listed(first)
        log.info(
            "listed" if first else "listed again",
            extra={
                "stream": self.key,
                "items": count,
                "resource_version": rv,
                "duration_seconds": round(time.monotonic() - started, 3),
            },
        )
        return rv

    def _watch(self, rv: str) -> tuple[str, int]:
        """Watch from `rv` until the stream ends; returns the last resourceVersion seen."""

        def call(**kwargs: Any) -> Any:
            response = self._list_fn(**kwargs)
            self._adopt(response)
            # Connected: the server is back, and replays everything after rv. Not a proof of
            # freshness yet (a 410 may come as the first event): the age moves on events.
            self.healthy = True
            self.connected = True
            return response

        kwargs: dict[str, Any] = {
            "resource_version": rv,
            "allow_watch_bookmarks": True,
            "timeout_seconds": self._options.watch_timeout_seconds,  # no Watch retries
            "_request_timeout": (CONNECT_TIMEOUT, self._options.watch_read_timeout),
        }
        if self._field_selector:
            kwargs["field_selector"] = self._field_selector
        events = 0
        watch = _RawWatch()  # type: ignore[no-untyped-call]
        generator = watch.stream(call, **kwargs)  # type: ignore[no-untyped-call]
        try:
            for event in generator:
                if self._stop.is_set():
                    raise StoppedError
                kind = event.get("type") if isinstance(event, Mapping) else None
                obj = event.get("raw_object") if isinstance(event, Mapping) else None
                if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, Mapping):
                    self._handler.apply(str(kind), obj)
                elif kind != "BOOKMARK":
                    log.warning("unexpected watch event", extra={"stream": self.key, "type": kind})
                    continue
                rv = _resource_version(obj) or rv
                events += 1
                self._on_alive()
        except ApiException as exc:
            if exc.status == GONE:
                raise _ExpiredError from exc
            raise
        finally:
            generator.close()  # closes and releases the response
            self._release()
        return rv, events
