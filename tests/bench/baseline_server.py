#!/usr/bin/python3
"""The obvious alternative to focald, as a user would write it, for side-by-side benchmarks.

A standard-library HTTP server (threads, keep-alive) that takes focald's JSON batch body,
computes torchvision's sigmoid_focal_loss per sample and appends one row per sample to SQLite
(WAL, synchronous=FULL: durable like focald's default) before answering with the losses.

usage: /usr/bin/python3 tests/bench/baseline_server.py PORT DBPATH
"""
import json
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from torchvision.ops import sigmoid_focal_loss

torch.set_num_threads(1)
db = sqlite3.connect(sys.argv[2], check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS observations (dataset TEXT, run TEXT, id TEXT, step INTEGER, loss REAL)")
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        x = torch.tensor(body["logits"], dtype=torch.float32)
        t = torch.nn.functional.one_hot(torch.tensor(body["targets"]), x.shape[-1]).float()
        losses = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="none").sum(-1).tolist()
        dataset = self.path.split("/")[3]
        rows = [(dataset, body.get("run", "default"), str(i), body.get("step"), l) for i, l in zip(body["ids"], losses)]
        with lock:
            db.executemany("INSERT INTO observations VALUES (?, ?, ?, ?, ?)", rows)
            db.commit()
        out = json.dumps({"losses": losses}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
