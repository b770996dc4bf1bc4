"""rppd Python worker host: one long-lived process that runs user functions for pythonRuntime.ts.

Protocol: newline-delimited JSON on fd 3, a socket pair the Node parent created. fd 1 and 2 stay
plain pipes for stray writes (os.write, C extensions, tracebacks of a dying process) so those can
never corrupt the protocol; the parent keeps their tail for error messages.

  parent -> host: {"op": "init", "dbUrl", "driver", "memoryLimitMb", "outputLimitBytes"}
  host -> parent: {"op": "ready", "pid", "driver", "python", "connectError"}   or  {"op": "fatal", "error"}
  parent -> host: {"op": "run", "seq", "fnId", "codeHash", "code", "label", "input"}
  host -> parent: {"op": "result", "seq", "ok", "output", "kind", "error", "tookMs"}

EOF on fd 3 means "shut down". Failure kinds are the ones of src/runtimes/runtime.ts.
"""

import builtins
import gc
import io
import json
import linecache
import os
import select
import signal
import sys
import time
import traceback

PROTO_FD = 3
REAL_STDOUT, REAL_STDERR = sys.stdout, sys.stderr
MEMORY_LIMIT_MB = 0  # as applied, for messages


def set_parent_death_signal():
    # A worker stuck in user code must not outlive a Node parent that died without closing it.
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Driver:
    """The little that differs between psycopg2 and psycopg 3."""

    def __init__(self, preferred):
        last_error = None
        for name in [preferred] if preferred else ['psycopg2', 'psycopg']:
            try:
                self.mod = __import__(name)
                self.name = name
                break
            except ImportError as e:
                last_error = e
        else:
            raise RuntimeError(f'cannot import a PostgreSQL driver ({last_error}); apt-get install python3-psycopg2')
        self.conn_errors = (self.mod.OperationalError, self.mod.InterfaceError)

    def connect(self, url):
        return self.mod.connect(url)

    def is_broken(self, conn):
        """Closed by the code or lost."""
        if self.name == 'psycopg2':
            return conn.closed != 0
        return conn.closed or conn.broken

    def is_lost(self, conn):
        """Lost by the server or network (psycopg2 says 2 there, 1 after an explicit close())."""
        if self.name == 'psycopg2':
            return conn.closed == 2
        return conn.broken

    def tx_status(self, conn):
        """'idle' | 'active' | 'intrans' | 'inerror' | 'unknown' (both drivers use libpq's numbering)."""
        if self.is_broken(conn):
            return 'unknown'
        code = conn.get_transaction_status() if self.name == 'psycopg2' else int(conn.info.transaction_status)
        return ('idle', 'active', 'intrans', 'inerror', 'unknown')[code] if 0 <= code <= 4 else 'unknown'


class Capture(io.TextIOBase):
    """sys.stdout/sys.stderr during a run: keeps the first `limit` bytes (UTF-8), counts the rest away."""

    encoding = 'utf-8'
    errors = 'replace'

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.used = 0
        self.parts = []
        self.truncated = False

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f'write() argument must be str, not {type(s).__name__}')
        if self.truncated:
            return len(s)
        data = s.encode('utf-8', 'replace')
        room = self.limit - self.used
        if len(data) <= room:
            self.parts.append(s)
            self.used += len(data)
        else:
            # Cut on a byte boundary; 'ignore' drops a character split in half.
            self.parts.append(data[:room].decode('utf-8', 'ignore'))
            self.used = self.limit
            self.truncated = True
        return len(s)

    def text(self):
        out = ''.join(self.parts)
        if self.truncated:
            if out and not out.endswith('\n'):
                out += '\n'
            out += f'[rppd: output truncated at {self.limit} bytes]\n'
        return out


class Host:
    def __init__(self, init):
        self.db_url = init['dbUrl']
        self.output_limit = int(init['outputLimitBytes'])
        self.driver = Driver(init.get('driver'))
        self.conn = None
        self.compiled = {}  # fn id -> (code hash, code object, source lines): one entry per function
        self.connect_error = self.reconnect()

    def reconnect(self):
        """Open a fresh connection; returns None or the reason it failed."""
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None
        try:
            self.conn = self.driver.connect(self.db_url)
            return None
        except Exception as e:
            return one_line(e)

    def ensure_connection(self):
        """Before a run: a usable connection, or the reason there is none."""
        if self.conn is None or self.driver.is_broken(self.conn):
            return self.reconnect()
        # An idle connection has nothing to read unless the server closed it (restart, terminated
        # backend) or sent a NOTIFY. Probing only then keeps the common path free of round trips
        # and spares the code a certain failure after a server restart.
        try:
            readable, _, _ = select.select([self.conn.fileno()], [], [], 0)
        except Exception:
            readable = True
        if readable:
            try:
                self.conn.cursor().execute('SELECT 1')
                self.conn.rollback()
            except Exception:
                return self.reconnect()
        return None

    def end_transaction(self, ok):
        """Commit after success, roll back after failure. Returns (outcome, message), outcome being
        'ok', 'note' (rolled back an aborted transaction after success), 'failed' or 'lost'."""
        conn = self.conn
        if self.driver.is_broken(conn):
            # Closed by the code itself is its business (the next run reconnects); lost is transient.
            if self.driver.is_lost(conn):
                return 'lost', 'the database connection was lost during the run'
            return 'ok', None
        try:
            status = self.driver.tx_status(conn)
            if ok and status == 'intrans':
                conn.commit()
            elif status != 'idle':
                conn.rollback()
            if conn.autocommit:  # the code may have switched it; every run starts as documented
                conn.autocommit = False
            if ok and status == 'inerror':
                return 'note', 'the transaction was in error at the end of the run and was rolled back'
            return 'ok', None
        except Exception as e:
            message = f'{"commit" if ok else "rollback"} failed: {one_line(e)}'
            if isinstance(e, self.driver.conn_errors) and self.driver.is_broken(conn):
                return 'lost', message
            try:
                conn.rollback()
            except Exception:
                return 'lost', message
            return 'failed', message

    def get_compiled(self, fn_id, code_hash, code):
        """Compiled once per (id, hash); a new hash replaces the function's entry."""
        hit = self.compiled.get(fn_id)
        if hit is not None and hit[0] == code_hash:
            return hit
        filename = f'<rppd function {fn_id}>'
        code_obj = compile(code, filename, 'exec')
        lines = code.splitlines()
        # Lets tracebacks the code formats itself show its lines.
        linecache.cache[filename] = (len(code), None, [line + '\n' for line in lines], filename)
        entry = (code_hash, code_obj, lines)
        self.compiled[fn_id] = entry
        return entry

    def run(self, req):
        label = req['label']
        inp = req['input']
        out = Capture(self.output_limit)
        problem = self.ensure_connection()
        started = time.perf_counter()  # took_ms is the code's time: compile, run, commit

        def result(ok, kind=None, error=None):
            took = (time.perf_counter() - started) * 1000
            return {'ok': ok, 'kind': kind, 'error': error, 'output': out.text(), 'tookMs': took}

        if problem is not None:
            return result(False, 'transient', f'database connection failed: {problem} on run {label}')
        try:
            _, code_obj, lines = self.get_compiled(req['fnId'], req['codeHash'], req['code'])
        except (SyntaxError, ValueError) as e:
            return result(False, 'compile', compile_message(e, label))

        run_globals = make_globals(inp, self.conn)
        failure = None
        sys.stdout = sys.stderr = out
        try:
            exec(code_obj, run_globals)
        except BaseException as e:
            failure = e
        finally:
            sys.stdout, sys.stderr = REAL_STDOUT, REAL_STDERR

        if failure is None:
            run_globals.clear()
            outcome, message = self.end_transaction(True)
            if outcome == 'lost':
                self.reconnect()
                return result(False, 'transient', f'{message} on run {label}')
            if outcome == 'failed':
                return result(False, 'function', f'{message} on run {label}')
            if outcome == 'note':
                out.write(f'[rppd: {message}]\n')
            return result(True)

        # Find the failing line before dropping the traceback: it holds the frames, and they hold
        # whatever a memory bomb allocated, which must be freed before anything else is built.
        where = user_line(failure.__traceback__, f'<rppd function {req["fnId"]}>', lines)
        failure.__traceback__ = None
        run_globals.clear()
        if isinstance(failure, MemoryError):
            gc.collect()
        kind, message = classify(failure, where, label, self.driver, self.conn)
        del failure
        if self.end_transaction(False)[0] == 'lost':
            self.reconnect()
        return result(False, kind, message)


def make_globals(inp, conn):
    """One dict as globals and locals, fresh per run, so defs see imports and nothing leaks."""
    key = inp.get('key') or {}
    g = {}
    for column, value in key.items():
        name = str(column).upper()
        if name.isidentifier():
            g[name] = value
    event_id = inp.get('eventId')
    # The fixed names win over a key column of the same name (a column "db" must not hide DB).
    g.update(
        {
            '__name__': '__rppd__',
            '__builtins__': builtins,
            'DB': conn,
            'TABLE': inp.get('table'),
            'TOPIC': inp.get('topic'),
            'TRIG': inp.get('trig'),
            'OP': inp.get('op'),
            'PK': tuple(inp.get('pk') or ()),
            'KEY': dict(key),
            'NEW': inp.get('new'),
            'OLD': inp.get('old'),
            'EVENT_ID': int(event_id) if isinstance(event_id, str) and event_id.isdigit() else event_id,
        }
    )
    return g


def user_line(tb, filename, lines):
    """'line N: <source>' of the innermost traceback frame that is the user's code, or ''."""
    lineno = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    if lineno is None:
        return ''
    source = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ''
    return f'line {lineno}: {source}'


def classify(e, where, label, driver, conn):
    if isinstance(e, SystemExit):
        return 'exit', f'SystemExit({e.code!r}) on run {label}: {where}'
    if isinstance(e, KeyboardInterrupt):
        return 'exit', f'KeyboardInterrupt on run {label}: {where}'
    message = f'{exception_head(e)} on run {label}: {where}'
    if isinstance(e, MemoryError):
        limit = f' (memory limit {MEMORY_LIMIT_MB} MiB)' if MEMORY_LIMIT_MB else ''
        return 'memory', message + limit
    if conn is not None and driver.is_lost(conn) and caused_by(e, driver.conn_errors):
        return 'transient', message
    return 'function', message


def caused_by(e, types):
    """True when e or an exception it was raised from/while handling is one of types."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, types):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def compile_message(e, label):
    if isinstance(e, SyntaxError):
        source = (e.text or '').strip()
        return f'{type(e).__name__}: {e.msg} on run {label}: line {e.lineno}: {source}'
    return f'{exception_head(e)} on run {label}: '


def exception_head(e):
    try:
        return ''.join(traceback.format_exception_only(type(e), e)).strip()
    except Exception:
        return type(e).__name__


def one_line(e):
    return ' '.join(exception_head(e).split())


def apply_memory_limit(mb):
    global MEMORY_LIMIT_MB
    if not mb or mb <= 0:
        return
    import resource

    limit = int(mb) * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and hard < limit:
        limit = hard
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit if hard == resource.RLIM_INFINITY else hard))
    MEMORY_LIMIT_MB = limit // (1024 * 1024)


def main():
    # Ctrl-C in a terminal reaches the whole process group; the Node parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_parent_death_signal()
    os.set_inheritable(PROTO_FD, False)  # subprocesses of user code must not hold the protocol open
    reader = os.fdopen(PROTO_FD, 'rb')
    writer = os.fdopen(os.dup(PROTO_FD), 'wb')

    def send(msg):
        writer.write(json.dumps(msg, ensure_ascii=True).encode('ascii') + b'\n')
        writer.flush()

    line = reader.readline()
    if not line:
        return
    try:
        init = json.loads(line)
        host = Host(init)
        apply_memory_limit(init.get('memoryLimitMb'))
    except Exception as e:
        send({'op': 'fatal', 'error': one_line(e)})
        sys.exit(2)
    ready = {'op': 'ready', 'pid': os.getpid(), 'driver': host.driver.name, 'python': sys.version.split()[0]}
    send({**ready, 'connectError': host.connect_error})
    while True:
        line = reader.readline()
        if not line:
            break
        req = json.loads(line)
        if req.get('op') != 'run':
            continue
        try:
            res = host.run(req)
        except BaseException as e:  # a bug of the host itself: report it, keep serving
            sys.stdout, sys.stderr = REAL_STDOUT, REAL_STDERR
            res = {'ok': False, 'kind': 'internal', 'error': f'python host: {one_line(e)}', 'output': ''}
        res['op'] = 'result'
        res['seq'] = req.get('seq')
        send(res)
    try:
        host.conn.close()
    except Exception:
        pass


if __name__ == '__main__':
    main()
