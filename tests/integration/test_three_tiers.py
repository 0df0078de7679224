"""www.foobar.com's three tiers, real: the gateway pair, the site's application on two app
servers, and MariaDB as the database primary and its read replica, each server behind the firewall
of its role.

Topology (tests/support/ha_lab.py and mariadb.py; one bridge, TEST-NET 192.0.2.0/24 only):

    client   192.0.2.100   HTTPS to the VIP 192.0.2.10
    gw1/gw2  192.0.2.11/12 rampart + keepalived, a VRRP pair
    app1/2   192.0.2.21/22 tests/support/foobar_app.py: each visit written to db1, counted on db2
    db1      192.0.2.31    mariadbd, the primary (binary log)
    db2      192.0.2.32    mariadbd, its replica (binary-log replication from db1)

Tests:

* fetches through the VIP are answered by app1 and app2 in turn; each wrote its visit to the
  primary (a row naming the app that served it) and read the count from the replica, which ends
  with every visit;
* the firewall roles, with real MySQL logins as the app user: app1 -> db1 and app2 -> db2 log
  in; the client -> db1, the client -> db2 and gw1 -> db1 do not, and db1's (db2's) "default drop"
  rule counted their packets;
* replication runs through db1's firewall: ``Slave_IO_Running: Yes`` and ``Slave_SQL_Running:
  Yes`` on db2 with db1 as its master, and db1's "database from the replica" rule counted packets;
* the gateway's health checks follow the databases: with db2 stopped, both apps' /health fail, the
  gateway marks both servers down and the site answers no visit; with db2 started again (on its
  data directory: replication resumes by itself) the servers come back and the visits go on, the
  replica catching up with what the primary wrote meanwhile.

Needs root, ``ip netns``, nft, keepalived and MariaDB (Debian mariadb-server, python3-pymysql;
scripts/setup.sh installs them): otherwise skipped with the reason, as when mariadbd cannot start.
Only processes this file started are stopped, by PID; the namespaces are removed at the end, also
on failure.
"""


import harness as h
import pytest
import ha_lab
import mariadb
import netns

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.tools("ip", "nft", "mariadb")]
BUDGET_S = 240

HOSTS = {**ha_lab.HOSTS, **ha_lab.DB_HOSTS}
FIREWALL = {"admin_networks": ["198.51.100.0/24"], "ssh_port": 22, "db_port": 3306}
HEALTH_CHANGE_S = 20.0  # guards against a hang: checks every 200 ms, fall/rise 2, plus the app's 2 s timeouts


@pytest.fixture(scope="module")
def lab() -> ha_lab.HaLab:
    reason = ha_lab.skip_reason(need_nft=True, rampart_bin=h.rampart_bin()) or mariadb.skip_reason()
    if reason:
        pytest.skip(reason)
    netns.install_signal_handlers()
    lab = ha_lab.HaLab("r3t", h.rampart_bin(), hosts=HOSTS, firewall=FIREWALL)
    try:
        lab.up()
        lab.configure()
        for host in ha_lab.ROLES:
            lab.apply_firewall(host)
        try:
            lab.start_databases()
        except RuntimeError as e:
            pytest.skip(f"MariaDB cannot start here: {str(e).splitlines()[0]}")
        lab.start_apps(site=True)
        lab.start_pair()
        lab.wait_master(20)
        yield lab
    finally:
        problems = lab.close()
        h.check(not problems, "; ".join(problems))


def drop_counter(lab: ha_lab.HaLab, host: str, comment: str = "default drop") -> int:
    """Packets counted by the rule with `comment` in the host's input chain."""
    text = lab.lab.exec(host, ["nft", "list", "chain", "inet", "rampart", "input"], timeout=30, check=True).stdout
    for line in text.splitlines():
        if f'"{comment}"' in line and "counter packets" in line:
            words = line.split()
            return int(words[words.index("packets") + 1])
    raise AssertionError(f"no counted rule {comment!r} on {host}:\n{text}")


def visits(db: mariadb.MariaDB) -> dict[str, int]:
    return {app: n for app, n in db.query(f"SELECT app, COUNT(*) FROM {mariadb.SITE_DB}.visits GROUP BY app")}


def test_visits_are_written_to_the_primary_and_counted_on_the_replica(lab):
    primary, replica = lab.databases["db1"], lab.databases["db2"]
    before = visits(primary)
    served, counts = [], []
    for i in range(6):
        r = lab.get(f"/visit/{i}")
        h.check(r is not None and r.status == 200, f"fetch {i}: {r and r.status} {r and r.body[:200]!r}")
        served.append(r.header("X-Backend"))
        counts.append(int(r.header("X-Visits")))
        h.check(b"visits: " in r.body, f"fetch {i}: {r.body!r}")
    h.check(sorted(set(served)) == ["app1", "app2"] and all(a != b for a, b in zip(served, served[1:])),
            f"round robin over the two apps: {served}")
    # What the replica counted can lag the primary by a write, never run ahead of it.
    h.check(counts == sorted(counts) and counts[-1] <= sum(visits(primary).values()), f"counts {counts}")
    after = visits(primary)
    for app in ("app1", "app2"):
        h.check(after.get(app, 0) - before.get(app, 0) == served.count(app),
                f"{app} served {served.count(app)} visits, the primary has {after} (before {before})")
    total = mariadb.wait_replicated(primary, replica)
    h.check(total == sum(after.values()), f"the replica counts {total}, the primary {after}")


def test_database_logins_follow_the_firewall_roles(lab):
    for src, db in (("app1", "db1"), ("app2", "db2")):
        ok, said = lab.mysql_login(src, db)
        h.check(ok and said.isdigit(), f"{src} -> {db}: the app user could not log in: {said}")
    for src, db in (("client", "db1"), ("client", "db2"), ("gw1", "db1")):
        before = drop_counter(lab, db)
        ok, said = lab.mysql_login(src, db, timeout=2)
        h.check(not ok, f"{src} -> {db}: logged in through the firewall: {said}")
        h.check("Can't connect" in said, f"{src} -> {db}: not a dropped connection: {said}")
        dropped = drop_counter(lab, db) - before
        h.check(dropped > 0, f"{src} -> {db}: {db}'s default drop counted no packet")


def test_replication_runs_through_the_firewall(lab):
    primary, replica = lab.databases["db1"], lab.databases["db2"]
    st = mariadb.replica_status(replica)
    h.check(st.get("Slave_IO_Running") == "Yes" and st.get("Slave_SQL_Running") == "Yes",
            f"replication: {st}")
    h.check(st.get("Master_Host") == lab.hosts["db1"] and not st.get("Last_IO_Error"), f"replication: {st}")
    h.check(drop_counter(lab, "db1", "database from the replica") > 0,
            "db1's rule for the replica counted no packet")
    primary.query(f"INSERT INTO {mariadb.SITE_DB}.visits (app) VALUES ('replication-check')")
    mariadb.wait_replicated(primary, replica)
    h.check(replica.query(f"SELECT COUNT(*) FROM {mariadb.SITE_DB}.visits WHERE app = 'replication-check'")[0][0] == 1,
            "the row written on the primary is not on the replica")


def _servers(lab, gw) -> dict[str, bool]:
    import json
    return {s["name"]: s["healthy"] for s in json.loads(lab.admin_get(gw, "/api/servers"))["servers"]}


def test_health_checks_follow_the_database(lab):
    master = lab.wait_master(20)
    replica = lab.databases["db2"]
    replica.stop()
    try:
        h.wait_until(lambda: _servers(lab, master) == {"app1": False, "app2": False}, HEALTH_CHANGE_S,
                     interval=0.2, what="both app servers down on the gateway once the replica is gone")
        r = lab.get("/visit/while-db2-is-down")
        h.check(r is None or r.status == 503, f"a visit was answered without its database: {r and r.status}")
        primary_during = sum(visits(lab.databases["db1"]).values())
    finally:
        replica.start(primary=False)
    h.wait_until(lambda: _servers(lab, master) == {"app1": True, "app2": True}, HEALTH_CHANGE_S, interval=0.2,
                 what="both app servers up again with the replica back")
    master = lab.wait_master(20)
    r = lab.get("/visit/after")
    h.check(r is not None and r.status == 200, f"no visit after the replica came back: {r and r.status}")
    st = mariadb.replica_status(replica)
    h.check(st.get("Slave_IO_Running") == "Yes", f"replication did not resume by itself: {st}")
    total = mariadb.wait_replicated(lab.databases["db1"], replica)
    h.check(total >= primary_during + 1, f"the replica has {total} visits, the primary had {primary_during} + 1")
