"""The simulated xenstored: nodes, permissions, transactions and watches."""

from __future__ import annotations

import errno
import multiprocessing

import pytest

from hypercalls.errors import TransactionConflict, XenstoreError
from hypercalls.interface import WatchEvent, XsPerm, XsPermission, perms, retry_transaction
from hypercalls.sim import SimHypervisor

from .conftest import create_spec, start_guest


def errno_of(call) -> int:
    with pytest.raises(XenstoreError) as e:
        call()
    return e.value.errno


def test_read_write_mkdir_rm_directory(hv):
    xs = hv.xenstore()
    assert errno_of(lambda: xs.read("/tool/a")) == errno.ENOENT
    assert errno_of(lambda: xs.directory("/tool/a")) == errno.ENOENT
    xs.write("/tool/a/b/c", "value")  # missing parents are created, empty
    assert xs.read("/tool/a/b/c") == "value" and xs.read("/tool/a") == ""
    xs.mkdir("/tool/a/z")
    xs.mkdir("/tool/a/z")  # already there: fine
    xs.write("/tool/a/m", "")
    assert xs.directory("/tool/a") == ["b", "m", "z"]
    xs.rm("/tool/a/b")
    assert xs.directory("/tool/a") == ["m", "z"] and xs.read_or("/tool/a/b/c") is None
    xs.rm("/tool/nothing/here")  # removing what is not there is no error
    xs.rm("/tool/a")
    assert xs.directory("/tool") == ["xenstored"]
    xs.write("relative/to/home", "x")
    assert xs.read("/local/domain/0/relative/to/home") == "x"  # relative paths start at the home
    assert errno_of(lambda: xs.write("/tool/bad/", "x")) == errno.EINVAL


def test_guest_reads_and_writes_only_what_it_may(hv, kernel):
    first = start_guest(hv, kernel)
    second = start_guest(hv, kernel)
    guest = hv.xenstore_as(first)
    dom = f"/local/domain/{first}"
    assert guest.read(f"{dom}/name") == f"guest{first}"  # readable: the dir grants it READ
    guest.write(f"{dom}/data/hello", "1")  # its own directory
    guest.write("data/relative", "2")
    assert hv.xenstore().read(f"{dom}/data/relative") == "2"
    for forbidden in (f"{dom}/name", f"{dom}/newnode", f"/local/domain/{second}/data/x", "/tool/x", "/vm/x"):
        assert errno_of(lambda forbidden=forbidden: guest.write(forbidden, "x")) == errno.EACCES, forbidden
    for forbidden in (f"/local/domain/{second}/name", "/local/domain/0/name", "/libxl"):
        assert errno_of(lambda forbidden=forbidden: guest.read(forbidden)) == errno.EACCES, forbidden
    # A missing node in a place it cannot see is EACCES too (nothing leaks), ENOENT in its own.
    assert errno_of(lambda: guest.read(f"/local/domain/{second}/nothing")) == errno.EACCES
    assert errno_of(lambda: guest.read(f"{dom}/data/nothing")) == errno.ENOENT
    assert errno_of(lambda: guest.rm(f"{dom}/name")) == errno.EACCES
    assert errno_of(lambda: guest.set_perms(f"{dom}/name", perms(first))) == errno.EACCES
    assert errno_of(lambda: guest.introduce_domain(first, 1, 1)) == errno.EACCES


def test_new_nodes_inherit_permissions_and_a_guest_owns_what_it_creates(hv, kernel):
    domid = start_guest(hv, kernel)
    xs = hv.xenstore()
    dom = f"/local/domain/{domid}"
    xs.write(f"{dom}/device/vbd/51712/state", "1")
    inherited = perms(0, (domid, XsPerm.READ))
    assert xs.get_perms(f"{dom}/device") == inherited and xs.get_perms(f"{dom}/device/vbd/51712/state") == inherited
    xs.set_perms(f"{dom}/data", perms(domid, (0, XsPerm.READ)))
    guest = hv.xenstore_as(domid)
    guest.write(f"{dom}/data/a/b", "x")
    assert xs.get_perms(f"{dom}/data/a/b") == perms(domid, (0, XsPerm.READ))
    # dom0 writing under the guest's node: inherits the guest's ownership.
    xs.write(f"{dom}/data/from-dom0", "y")
    assert xs.get_perms(f"{dom}/data/from-dom0")[0] == XsPermission(domid, XsPerm.NONE)
    # The owner may change permissions, but not give the node away.
    guest.set_perms(f"{dom}/data/a", perms(domid, default=XsPerm.READ))
    assert errno_of(lambda: guest.set_perms(f"{dom}/data/a", perms(0))) == errno.EPERM
    other = hv.xenstore_as(start_guest(hv, kernel))
    assert other.read(f"{dom}/data/a") == ""  # default READ for everyone now
    assert errno_of(lambda: other.write(f"{dom}/data/a", "z")) == errno.EACCES


def test_transaction_commit_and_abort(hv):
    xs = hv.xenstore()
    txn = xs.transaction_start()
    xs.write("/tool/t/a", "1", txn)
    assert xs.read("/tool/t/a", txn) == "1"
    assert xs.read_or("/tool/t/a") is None  # not visible outside before the commit
    xs.transaction_end(txn)
    assert xs.read("/tool/t/a") == "1"
    txn = xs.transaction_start()
    xs.rm("/tool/t", txn)
    xs.write("/tool/u", "2", txn)
    assert xs.directory("/tool", txn) == ["u", "xenstored"]
    xs.transaction_end(txn, abort=True)
    assert xs.read("/tool/t/a") == "1" and xs.read_or("/tool/u") is None
    with pytest.raises(XenstoreError):
        xs.read("/tool/t/a", txn)  # an ended transaction is gone


def test_two_transactions_claiming_one_name_the_second_conflicts(hv):
    xs = hv.xenstore()

    def claim(txn, domid: int, name: str) -> None:
        for entry in xs.directory("/local/domain", txn):
            assert xs.read_or(f"/local/domain/{entry}/name", None, txn) != name
        xs.write(f"/local/domain/{domid}/name", name, txn)

    first, second = xs.transaction_start(), xs.transaction_start()
    claim(first, 5, "web")
    claim(second, 6, "web")
    xs.transaction_end(first)
    with pytest.raises(TransactionConflict):
        xs.transaction_end(second)
    assert xs.read_or("/local/domain/6/name") is None
    # Retried, the body now sees the name taken.
    with pytest.raises(AssertionError):
        retry_transaction(xs, lambda txn: claim(txn, 6, "web"))


def test_transaction_conflicts_with_a_change_by_another_connection(host_path, hv):
    xs = hv.xenstore()
    xs.write("/tool/counter", "1")
    txn = xs.transaction_start()
    value = int(xs.read("/tool/counter", txn))
    with SimHypervisor(host_path) as other:
        other.xenstore().write("/tool/counter", "5")
    xs.write("/tool/counter", str(value + 1), txn)
    with pytest.raises(TransactionConflict):
        xs.transaction_end(txn)
    assert xs.read("/tool/counter") == "5"
    # Disjoint transactions both commit.
    a, b = xs.transaction_start(), xs.transaction_start()
    xs.write("/tool/counter/a", "1", a)
    xs.write("/libxl/b", "1", b)
    xs.transaction_end(b)
    xs.transaction_end(a)
    assert xs.read("/tool/counter/a") == xs.read("/libxl/b") == "1"
    # A transaction that created a child conflicts with a change to that parent made meanwhile.
    c = xs.transaction_start()
    xs.write("/tool/counter/c", "1", c)
    xs.write("/tool/counter", "6")
    with pytest.raises(TransactionConflict):
        xs.transaction_end(c)


def test_watch_fires_at_registration_and_on_changes_below(hv):
    xs = hv.xenstore()
    xs.watch("/tool", "tok")
    assert xs.read_watch(1) == WatchEvent("/tool", "tok")
    assert xs.read_watch(0.05) is None
    xs.write("/tool/a/b", "1")
    xs.write("/libxl/elsewhere", "1")
    xs.rm("/tool/a")
    assert xs.read_watch(1) == WatchEvent("/tool/a/b", "tok")
    assert xs.read_watch(1) == WatchEvent("/tool/a", "tok")
    assert xs.read_watch(0.05) is None
    xs.unwatch("/tool", "tok")
    xs.write("/tool/c", "1")
    assert xs.read_watch(0.05) is None
    assert errno_of(lambda: xs.unwatch("/tool", "tok")) == errno.ENOENT


def test_watch_inside_a_removed_subtree_fires(hv):
    xs = hv.xenstore()
    xs.write("/tool/a/b/c", "1")
    xs.watch("/tool/a/b/c", "deep")
    assert xs.read_watch(1).path == "/tool/a/b/c"
    xs.rm("/tool/a")
    assert xs.read_watch(1) == WatchEvent("/tool/a/b/c", "deep")


def test_transaction_fires_watches_only_at_commit(hv):
    xs = hv.xenstore()
    xs.watch("/tool", "t")
    xs.read_watch(1)
    txn = xs.transaction_start()
    xs.write("/tool/x", "1", txn)
    assert xs.read_watch(0.05) is None
    xs.transaction_end(txn)
    assert xs.read_watch(1) == WatchEvent("/tool/x", "t")


def _write_later(host_path, path: str) -> None:  # runs in a child process
    import time

    time.sleep(0.2)
    with SimHypervisor(host_path) as hv:
        hv.xenstore().write(path, "from the child")


def test_watch_sees_a_change_made_by_another_process(host_path, hv):
    xs = hv.xenstore()
    xs.watch("/local/domain/0/data", "tok")
    assert xs.read_watch(1).token == "tok"
    child = multiprocessing.get_context("fork").Process(target=_write_later, args=(host_path, "/local/domain/0/data/x"))
    child.start()
    try:
        assert xs.read_watch(10) == WatchEvent("/local/domain/0/data/x", "tok")
    finally:
        child.join(10)
    assert child.exitcode == 0
    assert xs.read("/local/domain/0/data/x") == "from the child"


def test_special_watches(hv, kernel):
    xs = hv.xenstore()
    xs.watch("@introduceDomain", "intro")
    xs.watch("@releaseDomain", "release")
    assert {xs.read_watch(1), xs.read_watch(1)} == {
        WatchEvent("@introduceDomain", "intro"), WatchEvent("@releaseDomain", "release")}
    xs.write("/tool/x", "1")  # special watches do not fire for paths
    domid = start_guest(hv, kernel)
    assert xs.read_watch(1) == WatchEvent("@introduceDomain", "intro")
    assert xs.read_watch(0.05) is None
    hv.domain_destroy(domid)
    assert xs.read_watch(1) == WatchEvent("@releaseDomain", "release")
    domid = start_guest(hv, kernel)
    assert xs.read_watch(1).path == "@introduceDomain"
    hv.domain_shutdown(domid, 0)
    assert xs.read_watch(1) == WatchEvent("@releaseDomain", "release")
    xs.release_domain(domid)
    assert xs.read_watch(1) == WatchEvent("@releaseDomain", "release")
    assert errno_of(lambda: xs.watch("@nonsense", "x")) == errno.EINVAL


def test_introduce_and_release(hv):
    xs = hv.xenstore()
    domid = hv.domain_create(create_spec())
    xs.introduce_domain(domid, 100, 1)
    assert xs.is_introduced(domid)
    xs.release_domain(domid)
    assert not xs.is_introduced(domid)
    xs.introduce_domain(domid, 100, 1)
    hv.domain_destroy(domid)
    assert not xs.is_introduced(domid)  # destroy releases it; the nodes stay (the toolstack's job)
    assert errno_of(lambda: xs.introduce_domain(999, 1, 1)) == errno.EINVAL


def test_a_connection_behind_the_change_log_gets_a_catch_up_event(hv, monkeypatch):
    import hypercalls.sim.state

    monkeypatch.setattr(hypercalls.sim.state, "MAX_CHANGES", 3)
    xs = hv.xenstore()
    xs.watch("/tool", "t")
    xs.read_watch(1)
    for i in range(10):
        xs.write(f"/libxl/n{i}", "x")  # fills the log with changes that do not concern the watch
    xs.write("/tool/late", "1")
    assert xs.read_watch(1) == WatchEvent("/tool", "t")  # something may have been missed
    assert xs.read_watch(1) == WatchEvent("/tool/late", "t")
