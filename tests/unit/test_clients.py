"""`runtime.clients.new_session`: Sessions of their own that share one loader of the service
models, so a client costs its construction, not a re-read of the models' JSON."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from runtime.clients import AWS_CLIENT_CONFIG, new_session


def _loader(session: object) -> object:
    return session._session.get_component("data_loader")  # type: ignore[attr-defined]


def test_sessions_share_one_loader_whose_search_paths_do_not_grow() -> None:
    first, second = new_session(), new_session()
    assert _loader(first) is _loader(second)
    paths = list(_loader(first).search_paths)  # type: ignore[attr-defined]
    for _ in range(5):
        new_session()
    assert _loader(first).search_paths == paths  # type: ignore[attr-defined]
    assert len(set(paths)) == len(paths)


def test_clients_built_in_threads_from_their_own_sessions_are_independent() -> None:
    def build(n: int) -> object:
        region = ("us-east-1", "eu-west-1")[n % 2]
        return new_session().client("sqs", region_name=region, config=AWS_CLIENT_CONFIG)

    with ThreadPoolExecutor(max_workers=8) as pool:
        clients = list(pool.map(build, range(16)))
    assert len({id(client) for client in clients}) == 16
    regions = [client.meta.region_name for client in clients]  # type: ignore[attr-defined]
    assert regions == [("us-east-1", "eu-west-1")[n % 2] for n in range(16)]
