"""A throw-away PostgreSQL 15 server for the cluster tests and benchmarks.

PostgreSQL(): initdb into a temporary directory, started on a free loopback port by an unprivileged user
(nobody when this runs as root; PostgreSQL refuses to run as root), trust authentication on loopback only,
the Unix socket inside the directory. conninfo() is a libpq connection string for focald.
stop_immediate() stops it as a crash would (pg_ctl stop -m immediate: no shutdown checkpoint, the WAL is
replayed at the next start); start() starts it again on the same port and directory. freeze() stops every
process of this server with SIGSTOP (the kernel still accepts connections and acknowledges packets, and
nothing answers); thaw() continues them.

Used as a command too:  pgtemp.py run -- CMD ARGS...  starts a server, runs CMD with FOCALD_TEST_PG set to
its conninfo and FOCALD_TEST_PG_RESTART to a command that stops it immediately and starts it again, then
removes it. The exit status is CMD's.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

BIN = "/usr/lib/postgresql/15/bin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgreSQL:
    def __init__(self, user="focald", db="focald"):
        if not os.path.exists(os.path.join(BIN, "initdb")):
            raise RuntimeError("PostgreSQL 15 is not installed (Debian's postgresql-15; make test installs it)")
        self.user, self.db = user, db
        self.dir = tempfile.mkdtemp(prefix="focald-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.run_as = None
        if os.geteuid() == 0:
            self.run_as = "nobody"
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o755)
        self._pg("initdb", "-D", self.data, "-U", user, "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
        self.start()
        self._pg("createdb", "-h", self.dir, "-p", str(self.port), "-U", user, db)

    def _pg(self, tool, *args, check=True):
        cmd = [os.path.join(BIN, tool), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=self.dir)

    def start(self):
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200 "
                "-c fsync=on -c synchronous_commit=on")
        r = self._pg("pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", os.path.join(self.dir, "log"),
                     "-o", opts, check=False)
        if r.returncode != 0:
            raise RuntimeError("PostgreSQL did not start:\n" + r.stdout + self.log_tail())

    def stop_immediate(self):
        self._pg("pg_ctl", "stop", "-w", "-D", self.data, "-m", "immediate", check=False)

    def stop(self):
        self._pg("pg_ctl", "stop", "-w", "-D", self.data, "-m", "fast", check=False)

    def processes(self):
        """This server's postmaster (named by the postmaster.pid of its data directory, which must name that
        directory back) and its children, the backends and background processes: never another server's."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            lines = f.read().splitlines()
        if len(lines) < 2 or os.path.realpath(lines[1]) != os.path.realpath(self.data):
            raise RuntimeError("postmaster.pid of %s names another data directory: %r" % (self.data, lines[:2]))
        postmaster = int(lines[0])
        children = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:  # the field after the state: the parent
                children.append(int(d))
        return postmaster, children

    def freeze(self):
        """Stops every process of this server (SIGSTOP), the postmaster first so that it starts no other.
        Returns their pids, for thaw; call thaw in a finally block."""
        postmaster, _ = self.processes()
        os.kill(postmaster, signal.SIGSTOP)
        stopped = [postmaster]
        try:
            while True:  # until a listing finds none not stopped: a child forked just before counts too
                new = [pid for pid in self.processes()[1] if pid not in stopped]
                if not new:
                    return stopped
                for pid in new:
                    try:
                        os.kill(pid, signal.SIGSTOP)
                    except ProcessLookupError:
                        pass
                    stopped.append(pid)
        except BaseException:
            self.thaw(stopped)
            raise

    def thaw(self, pids):
        """Continues the processes freeze stopped."""
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def restart_command(self):
        """A shell command that stops the server immediately and starts it again."""
        me = os.path.abspath(__file__)
        return f"{sys.executable} {me} restart {self.dir} {self.port}" + (f" {self.run_as}" if self.run_as else "")

    def log_tail(self, n=40):
        try:
            with open(os.path.join(self.dir, "log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def conninfo(self, db=None):
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={db or self.db} connect_timeout=5"

    def uri(self, db=None):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db or self.db}?connect_timeout=5"

    def new_database(self, name):
        """Creates database name; returns its postgresql:// URI."""
        self._pg("createdb", "-h", self.dir, "-p", str(self.port), "-U", self.user, name)
        return self.uri(name)

    def sql(self, db, statement):
        """Runs one statement with psql; returns its rows' text (unaligned, tab-separated)."""
        r = subprocess.run(["psql", "-X", "-q", "-tA", "-F", "\t", "-v", "ON_ERROR_STOP=1", self.uri(db), "-c",
                            statement], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return r.stdout

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _restart(dir_, port, run_as):
    pg = PostgreSQL.__new__(PostgreSQL)
    pg.dir, pg.data, pg.port, pg.run_as = dir_, os.path.join(dir_, "data"), int(port), run_as
    pg.stop_immediate()
    pg.start()


def main(argv):
    if len(argv) >= 3 and argv[0] == "restart":
        _restart(argv[1], argv[2], argv[3] if len(argv) > 3 else None)
        return 0
    if len(argv) >= 2 and argv[0] == "run" and argv[1] == "--":
        with PostgreSQL() as pg:
            env = dict(os.environ, FOCALD_TEST_PG=pg.conninfo(), FOCALD_TEST_PG_RESTART=pg.restart_command())
            rc = subprocess.call(argv[2:], env=env)
            if rc != 0:
                sys.stderr.write("PostgreSQL's log, last lines:\n" + pg.log_tail())
            return rc
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
