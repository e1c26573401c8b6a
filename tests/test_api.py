"""The HTTP API on real nodes (py-libp2p on 127.0.0.1), called over its served port;
every answer is checked against the served OpenAPI document."""

from __future__ import annotations

import json

import pytest
import trio
from api_client import api_node, eventually
from harness import network
from libp2p.peer.id import ID
from prometheus_client.parser import text_string_to_metric_families

from p2pexchange.core.events import Cancel

pytestmark = pytest.mark.network

BUY = {"market": "BTC-USD", "side": "buy", "type": "limit", "price": "100.00",
       "quantity": "0.5"}


async def test_an_order_placed_through_a_shows_in_bs_book_and_in_as_orders_and_a_cancel_removes_it_everywhere(tmp_path):  # noqa: E501
    async with network(tmp_path) as net, api_node(net, "a") as a, \
            api_node(net, "b", bootstrap=a.node) as b:
        placed = await a.call("POST", "/orders", json=BUY)
        assert placed.status_code == 201
        order_id = placed.json()["order_id"]
        assert placed.json()["outcome"] == "resting" and len(order_id) == 68

        async def in_bs_book() -> bool:
            book = (await b.call("GET", "/book/BTC-USD", "/book/{market}")).json()
            return book["bids"] == [{"price": "100", "quantity": "0.5"}]
        await eventually(in_bs_book, "the order in B's book")
        mine = (await a.call("GET", "/orders?status=open")).json()["orders"]
        assert [o["order_id"] for o in mine] == [order_id]
        assert (await b.call("GET", "/orders")).json()["orders"] == []

        cancelled = await a.call("DELETE", f"/orders/{order_id}", "/orders/{order_id}")
        assert cancelled.json() == {"order_id": order_id, "outcome": "cancelled"}

        async def gone_everywhere() -> bool:
            books = [(await c.call("GET", "/book/BTC-USD", "/book/{market}")).json()
                     for c in (a, b)]
            return all(book["bids"] == [] for book in books)
        await eventually(gone_everywhere, "the order gone from both books")
        assert b.node.order(bytes.fromhex(order_id)).status.name == "CANCELLED"
        assert (await a.call("GET", "/orders")).json()["orders"] == []
        closed = (await a.call("GET", "/orders?status=all")).json()["orders"]
        assert [(o["order_id"], o["status"]) for o in closed] == [(order_id, "cancelled")]


async def test_the_same_client_order_id_twice_makes_one_order(tmp_path):
    async with network(tmp_path) as net, api_node(net, "a") as a:
        body = {**BUY, "client_order_id": "mm-1"}
        replies: list = []

        async def place() -> None:
            replies.append(await a.call("POST", "/orders", json=body))
        async with trio.open_nursery() as nursery:  # concurrently: one is in flight
            nursery.start_soon(place)
            nursery.start_soon(place)
        replies.append(await a.call("POST", "/orders", json=body))  # and once more later
        assert sorted(r.status_code for r in replies) == [200, 200, 201]
        assert len({r.json()["order_id"] for r in replies}) == 1
        assert sum(r.json()["duplicate"] for r in replies) == 2
        batch = await a.call("POST", "/orders/batch", json={"orders": [body, body]})
        assert {r["order_id"] for r in batch.json()["results"]} == {replies[0].json()["order_id"]}
        assert len((await a.call("GET", "/orders")).json()["orders"]) == 1
        assert a.node.status()["own_seq"] == 1


async def test_a_batch_of_a_thousand_orders_is_one_call_and_more_is_refused(tmp_path):
    async with network(tmp_path) as net, api_node(net, "a") as a:
        orders = [{**BUY, "price": f"{100 + i}.00", "side": "buy"} for i in range(1000)]
        reply = await a.call("POST", "/orders/batch", json={"orders": orders})
        results = reply.json()["results"]
        assert len(results) == 1000 and {r["outcome"] for r in results} == {"resting"}
        assert len({r["order_id"] for r in results}) == 1000
        too_many = await a.call("POST", "/orders/batch", json={"orders": orders + orders[:1]})
        assert too_many.status_code == 422
        assert too_many.json()["error"]["field"] == "orders"
        cancelled = await a.call("DELETE", "/orders?market=BTC-USD")
        assert "cancelled" in cancelled.json(), cancelled.text
        assert len(cancelled.json()["cancelled"]) == 1000


async def test_a_batch_cancel_answers_each_order_and_cancels_only_our_open_ones(tmp_path):
    async with network(tmp_path) as net, api_node(net, "a") as a, \
            api_node(net, "b", bootstrap=a.node) as b:
        theirs = (await b.call("POST", "/orders", json=BUY)).json()["order_id"]
        await eventually(lambda: _known(a, theirs), "B's order known to A")
        orders = [{**BUY, "price": f"{100 + i}.00"} for i in range(3)]
        placed = (await a.call("POST", "/orders/batch", json={"orders": orders})).json()
        first, second, kept = (r["order_id"] for r in placed["results"])
        closed = (await a.call("POST", "/orders", json={**BUY, "type": "ioc"})).json()
        unknown = "ab" * 34
        ids = [first, theirs, second, unknown, closed["order_id"], first]
        reply = await a.call("POST", "/orders/cancel", json={"order_ids": ids})
        assert reply.status_code == 200, reply.text
        assert [(r["order_id"], r["outcome"]) for r in reply.json()["results"]] == [
            (first, "cancelled"), (theirs, "not_my_order"), (second, "cancelled"),
            (unknown, "unknown_order"), (closed["order_id"], "not_open"), (first, "cancelled")]
        open_now = (await a.call("GET", "/orders")).json()["orders"]
        assert [o["order_id"] for o in open_now] == [kept]
        cancels = [action.order_id for e in a.node.replica.events_of(a.node.origin)
                   for action in e.actions if type(action) is Cancel]
        assert cancels == [bytes.fromhex(first), bytes.fromhex(second)]  # each once

        async def gone_from_bs_book() -> bool:
            book = (await b.call("GET", "/book/BTC-USD", "/book/{market}")).json()
            return [level["price"] for level in book["bids"]] == ["102", "100"]
        await eventually(gone_from_bs_book, "the two cancels applied on B")
        for body, field in (({"order_ids": [first, "zz"]}, "order_ids.1"),
                            ({"order_ids": [first] * 1001}, "order_ids"),
                            ({"order_ids": []}, "order_ids")):
            refused = await a.call("POST", "/orders/cancel", json=body)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["field"] == field, refused.text
        assert [o["order_id"] for o in (await a.call("GET", "/orders")).json()["orders"]] \
            == [kept]


async def test_each_documented_error_names_the_field_and_the_reason(tmp_path, monkeypatch):
    async with network(tmp_path) as net, api_node(net, "a") as a, \
            api_node(net, "b", bootstrap=a.node) as b:
        theirs = (await b.call("POST", "/orders", json=BUY)).json()["order_id"]
        await eventually(lambda: _known(a, theirs), "B's order known to A")
        mine = (await a.call("POST", "/orders", json=BUY)).json()["order_id"]
        await a.call("DELETE", f"/orders/{mine}", "/orders/{order_id}")
        cases = [
            ("POST", "/orders", {**BUY, "price": "100.001"}, 422, "price", "off_tick"),
            ("POST", "/orders", {**BUY, "quantity": "0.00005"}, 422, "quantity", "off_lot"),
            ("POST", "/orders", {**BUY, "market": "DOGE-USD"}, 422, "market", "unknown_market"),
            ("POST", "/orders", {**BUY, "price": "abc"}, 422, "price", "bad_decimal"),
            ("POST", "/orders", {k: v for k, v in BUY.items() if k != "side"}, 422, "side",
             "missing"),
            ("POST", "/orders", {**BUY, "type": "market"}, 422, "price", "price_not_allowed"),
            ("GET", "/book/DOGE-USD", None, 404, None, "unknown_market"),
            ("DELETE", "/orders/" + "ab" * 34, None, 404, "order_id", "unknown_order"),
            ("DELETE", f"/orders/{theirs}", None, 403, "order_id", "not_my_order"),
            ("DELETE", f"/orders/{mine}", None, 409, "order_id", "not_open"),
            ("DELETE", "/orders/zz", None, 422, "order_id", "bad_order_id"),
            ("GET", "/trades?limit=0", None, 422, "limit", "invalid"),
        ]
        for method, path, body, code, field, reason in cases:
            route = "/book/{market}" if path.startswith("/book/") else (
                "/orders/{order_id}" if path.startswith("/orders/") else None)
            reply = await a.call(method, path, route, json=body)
            assert reply.status_code == code, (path, body, reply.text)
            assert reply.json()["error"]["field"] == field, (path, body, reply.text)
            assert reply.json()["error"]["reason"] == reason, (path, body, reply.text)
        malformed = await a.call("POST", "/orders", content=b'{"market": "BTC',
                                 headers={"content-type": "application/json"})
        assert malformed.status_code == 400
        assert malformed.json()["error"]["reason"] == "malformed_json"
        monkeypatch.setattr("p2pexchange.node.PENDING_ACTIONS_MAX", 0)  # the queue is full
        busy = await a.call("POST", "/orders", json=BUY)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["reason"] == "node_busy"


async def test_a_cancel_of_an_order_closed_long_ago_is_still_not_open(tmp_path, monkeypatch):
    """Once a cancel is final the books forget the cancelled order (compaction), the
    replica keeps none of our own (OWN_CLOSED_MAX 0 here), and, past a checkpoint (one
    per event that acts here), the replica forgets the event that placed it: DELETE
    still answers 409 `not_open` to its owner and 403 `not_my_order` to another node
    (read from the store), never 404."""
    monkeypatch.setattr("p2pexchange.core.replica.OWN_CLOSED_MAX", 0)
    async with network(tmp_path) as net, api_node(net, "a", checkpoint_every=1) as a, \
            api_node(net, "b", bootstrap=a.node, checkpoint_every=1) as b:
        mine = (await a.call("POST", "/orders", json=BUY)).json()["order_id"]
        await a.call("DELETE", f"/orders/{mine}", "/orders/{order_id}")

        async def forgotten(client) -> bool:
            client.node.replica.compact()
            return client.node.order(bytes.fromhex(mine)) is None and \
                client.node.replica.event(bytes.fromhex(mine)[:32]) is None
        await eventually(lambda: forgotten(a), "the cancel final on A and compacted")
        await eventually(lambda: forgotten(b), "the cancel final on B and compacted")
        for client, code, reason in ((a, 409, "not_open"), (b, 403, "not_my_order")):
            reply = await client.call("DELETE", f"/orders/{mine}", "/orders/{order_id}")
            assert reply.status_code == code, reply.text
            assert reply.json()["error"]["reason"] == reason, reply.text
        other = mine[:-4] + "0007"  # an index that placed nothing
        reply = await a.call("DELETE", f"/orders/{other}", "/orders/{order_id}")
        assert reply.status_code == 404, reply.text


async def test_a_busy_node_refuses_new_orders_but_takes_cancels(tmp_path, monkeypatch):
    """Backpressure is for new orders: a cancel only lightens the book, so a busy node
    (here: its event loop counts as late whatever the lag) still takes it."""
    async with network(tmp_path) as net, api_node(net, "a") as a:
        mine = (await a.call("POST", "/orders", json=BUY)).json()["order_id"]
        monkeypatch.setattr("p2pexchange.node.LOOP_LAG_BUSY_MS", -1.0)
        refused = await a.call("POST", "/orders", json=BUY)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["reason"] == "node_busy"
        taken = await a.call("DELETE", f"/orders/{mine}", "/orders/{order_id}")
        assert taken.status_code == 200 and taken.json()["outcome"] == "cancelled", taken.text


async def _known(client, order_id: str) -> bool:
    return client.node.order(bytes.fromhex(order_id)) is not None


async def test_status_trades_and_metrics_describe_the_node(tmp_path):
    async with network(tmp_path) as net, api_node(net, "a") as a, \
            api_node(net, "b", bootstrap=a.node) as b:
        await net.discovered()
        await a.call("POST", "/orders", json={**BUY, "side": "sell"})
        await eventually(lambda: _resting(b), "A's order in B's book")
        await b.call("POST", "/orders", json={**BUY, "type": "ioc"})
        await net.converged()
        status = (await a.call("GET", "/status")).json()
        assert status["peers"] == 1 and status["multiaddrs"] == [a.node.listen_addr]
        assert sorted(status["members"]) == sorted([str(a.node.peer_id), str(b.node.peer_id)])
        assert status["digest"] == b.node.replica.digest_hex and status["trades"] == 1
        trades = (await a.call("GET", "/trades?market=BTC-USD&limit=5")).json()["trades"]
        assert [(t["price"], t["quantity"], t["taker_side"]) for t in trades] == [
            ("100", "0.5", "buy")]
        assert trades[0]["status"] in ("pending", "final")
        assert (await a.call("GET", "/trades?market=ETH-USD")).json()["trades"] == []
        text = (await a.call("GET", "/metrics")).text
        metrics = {m.name: m for m in text_string_to_metric_families(text)}
        for name in ("p2pexchange_events_received", "p2pexchange_events_applied",
                     "p2pexchange_rejected", "p2pexchange_rollbacks", "p2pexchange_peers",
                     "p2pexchange_trades_pending", "p2pexchange_trades_final",
                     "p2pexchange_place_to_applied_seconds"):
            assert name in metrics, name
        latency = {s.name: s.value for s in metrics["p2pexchange_place_to_applied_seconds"]
                   .samples}
        assert latency["p2pexchange_place_to_applied_seconds_count"] == 1
        received = {tuple(s.labels.values()): s.value
                    for s in metrics["p2pexchange_events_received"].samples}
        # B's events reached A: its buy, and its join's acknowledgements.
        assert sum(v for (path, result), v in received.items() if result == "delivered") >= 1


async def _resting(client) -> bool:
    return client.node.status()["resting"]["BTC-USD"] == 1


async def test_the_stream_delivers_a_trade_to_both_owners_then_its_turn_to_final(tmp_path):
    from trio_websocket import open_websocket_url
    async with network(tmp_path) as net, api_node(net, "a") as a, \
            api_node(net, "b", bootstrap=a.node) as b:
        await net.discovered()
        seen: dict[str, list[dict]] = {"a": [], "b": []}

        async def listen(name: str, port: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
            url = f"ws://127.0.0.1:{port}/stream?market=BTC-USD"
            async with open_websocket_url(url) as ws:
                task_status.started()
                while True:
                    seen[name].append(json.loads(await ws.get_message()))

        async with trio.open_nursery() as nursery:
            await nursery.start(listen, "a", a.port)
            await nursery.start(listen, "b", b.port)
            maker = (await a.call("POST", "/orders", json={**BUY, "side": "sell"})).json()
            await eventually(lambda: _resting(b), "A's order in B's book")
            taker = (await b.call("POST", "/orders", json={**BUY, "type": "ioc"})).json()
            # The answer shows what the order took on arrival.
            assert [(f["role"], f["trade_event_id"]) for f in taker["order"]["fills"]] == [
                ("taker", taker["order_id"][:64])]

            def trades(name: str, status: str) -> list[dict]:
                return [m for m in seen[name] if m["type"] == "trade"
                        and m["status"] == status]

            async def final_on_both() -> bool:
                return all(trades(n, "final") for n in seen)
            await eventually(final_on_both, "the trade final on both streams", 60)
            nursery.cancel_scope.cancel()
        for name in seen:
            pending, final = trades(name, "pending")[0], trades(name, "final")[0]
            assert seen[name].index(pending) < seen[name].index(final)
            assert (pending["maker_order"], pending["taker_order"]) == (
                maker["order_id"], taker["order_id"])
            assert {**pending, "status": "final"} == final
        orders_a = [m["order"] for m in seen["a"] if m["type"] == "order"]
        assert orders_a[-1]["order_id"] == maker["order_id"]
        assert orders_a[-1]["status"] == "filled"
        assert any(m["type"] == "book" for m in seen["b"])


async def test_a_node_with_an_open_stream_stops_cleanly(tmp_path):
    from trio_websocket import open_websocket_url
    async with network(tmp_path) as net, api_node(net, "a") as a:
        async with open_websocket_url(f"ws://127.0.0.1:{a.port}/stream") as ws:
            assert json.loads(await ws.get_message())["type"] == "status"
            await net.stop(a.node)  # fails the test if it takes more than 20 s
        assert not (tmp_path / "a" / "api.json").exists()


async def test_the_stream_reports_my_orders_that_end_without_an_event_naming_them(tmp_path):
    """A resting order of ours expired by self-trade prevention (our own taker with
    `expire_maker`) is named by no event, and a cancel names it only in its action."""
    from trio_websocket import open_websocket_url
    async with network(tmp_path) as net, api_node(net, "a") as a:
        seen: list[dict] = []

        async def listen(task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with open_websocket_url(f"ws://127.0.0.1:{a.port}/stream?types=order") as ws:
                task_status.started()
                while True:
                    seen.append(json.loads(await ws.get_message()))

        def last(order_id: str) -> dict | None:
            updates = [m["order"] for m in seen if m["order"]["order_id"] == order_id]
            return updates[-1] if updates else None

        async with trio.open_nursery() as nursery:
            await nursery.start(listen)
            maker = (await a.call("POST", "/orders", json={**BUY, "side": "sell"})).json()
            other = (await a.call("POST", "/orders", json={**BUY, "price": "90.00"})).json()
            await eventually(lambda: _shown(last, maker, "resting"), "the maker shown open")
            await eventually(lambda: _shown(last, other, "resting"), "the other shown open")
            await a.call("POST", "/orders", json={**BUY, "type": "ioc", "stp": "expire_maker"})
            await eventually(lambda: _shown(last, maker, "cancelled"), "the maker expired")
            await a.call("DELETE", f"/orders/{other['order_id']}", "/orders/{order_id}")
            await eventually(lambda: _shown(last, other, "cancelled"), "the cancel shown")
            nursery.cancel_scope.cancel()
        assert last(maker["order_id"])["reason"] == "stp_expired_maker"


async def _shown(last, placed: dict, status: str) -> bool:
    update = last(placed["order_id"])
    return update is not None and update["status"] == status


async def test_misbehaviour_lists_each_proof_of_equivocation_with_both_signed_events(tmp_path):
    """Two events one origin signed with the same seq: GET /misbehaviour shows both,
    and each verifies with the origin's key (anyone can check the proof)."""
    from p2pexchange.core.events import OrderType, Place, Side, decode_event, sign_event
    from p2pexchange.core.market import DEFAULT_MARKETS
    from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair
    async with network(tmp_path) as net, api_node(net, "a") as a:
        assert (await a.call("GET", "/misbehaviour")).json() == {"equivocations": []}
        liar = seeded_key_pair("liar")
        origin = peer_id_bytes(liar)
        absent = (1, bytes(32))  # a cause nobody has: both versions wait in the buffer
        one, two = (sign_event(liar.private_key, origin, 1, {b"x" * 38: absent}, 2, "BTC-USD",
                               [Place(Side.SELL, OrderType.LIMIT, price, 1)])
                    for price in (100, 101))
        assert a.node.replica.receive(one.raw).status == "buffered"
        assert a.node.replica.receive(two.raw).code == "equivocation"
        (proof,) = (await a.call("GET", "/misbehaviour")).json()["equivocations"]
        assert proof["seq"] == 1 and proof["origin"] == str(ID(origin))
        first, second = (decode_event(bytes.fromhex(proof[k]), DEFAULT_MARKETS)
                         for k in ("first", "second"))
        assert (first.id, second.id) == (one.id, two.id)
        assert (await a.call("GET", "/status")).json()["equivocations"] == 1
