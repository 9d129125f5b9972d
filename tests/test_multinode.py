"""Several nodes: the msrun launcher over two "nodes" of this machine (node 1 in its own network namespace,
joined to node 0 by a veth pair), and the Ascend rank-table launcher's per-server dry run."""
import json
import os
import re
import shutil
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from conftest import REPO, TINY_CFG
from src.models.spec import ModelSpec

BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
NETNS = f"yolo21-{os.getpid()}"
VETH = (f"y21a{os.getpid() % 100000}", f"y21b{os.getpid() % 100000}")
NODE0_ADDR, NODE1_ADDR = "10.213.7.1", "10.213.7.2"  # a private /30 that exists only on the veth pair
PORT = "8141"


def ip(*args, netns=None):
    cmd = ["ip", "netns", "exec", netns, "ip", *args] if netns else ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def node1_netns():
    """A network namespace for node 1 and a veth pair NODE0_ADDR (here) <-> NODE1_ADDR (there);
    both removed afterwards, also when the test fails."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    try:
        ip("netns", "add", NETNS)
        ip("link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1])
        ip("link", "set", VETH[1], "netns", NETNS)
        ip("addr", "add", f"{NODE0_ADDR}/30", "dev", VETH[0])
        ip("link", "set", VETH[0], "up")
        ip("addr", "add", f"{NODE1_ADDR}/30", "dev", VETH[1], netns=NETNS)
        ip("link", "set", VETH[1], "up", netns=NETNS)
        ip("link", "set", "lo", "up", netns=NETNS)
        yield NETNS
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create a network namespace here: {e.stderr.strip()}")
    finally:
        subprocess.run(["ip", "link", "del", VETH[0]], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def shapes64(tmp_path_factory):
    from src.data.synthetic import make_dataset
    root = tmp_path_factory.mktemp("shapes64")
    make_dataset(str(root), 64, 2, size=64, min_size=16, max_size=40)
    return str(root)


def test_two_nodes_form_one_job(node1_netns, shapes64, tmp_path):
    launcher = os.path.join(REPO, "scripts", "run_distribute_train_cpu.sh")
    procs = []
    for node in (0, 1):
        folder = tmp_path / f"node{node}"
        folder.mkdir()
        env = dict(ENV, NODE_NUM="2", NODE_RANK=str(node), MASTER_ADDR=NODE0_ADDR, MASTER_PORT=PORT)
        cmd = ["bash", launcher, shapes64, "1", "--config_path", TINY_CFG, "--training_shape", "64",
               "--max_epoch", "1", "--per_batch_size", "4", "--num_parallel_workers", "1",
               "--is_save_on_master", "0", "--ckpt_path", str(folder / "out")]
        if node == 1:
            cmd = ["ip", "netns", "exec", node1_netns, *cmd]  # keeps the environment
        procs.append(subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    logs = ""
    for node in (0, 1):
        log_dir = tmp_path / f"node{node}" / "train_parallel" / f"node_{node}"
        for name in sorted(os.listdir(log_dir)) if log_dir.is_dir() else []:
            logs += f"--- node {node} {name}\n" + (log_dir / name).read_text()[-2000:]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs) + logs
    # each node logged its own worker (global rank = node) and only node 0 ran the scheduler
    assert sorted(os.listdir(tmp_path / "node0" / "train_parallel" / "node_0")) == ["scheduler.log", "worker_0.log"]
    assert sorted(os.listdir(tmp_path / "node1" / "train_parallel" / "node_1")) == ["worker_1.log"]
    ckpts = []
    for rank in (0, 1):
        out = tmp_path / f"node{rank}" / "out"
        assert os.listdir(out / f"ckpt_{rank}") == [f"{rank}-1_8.ckpt"]
        assert not (out / f"ckpt_{1 - rank}").exists()
        ckpts.append(ms.load_checkpoint(str(out / f"ckpt_{rank}" / f"{rank}-1_8.ckpt")))
    # 64 images sharded over 2 ranks at batch 4: 8 steps, not the 16 of one rank alone
    assert [int(c["global_step"].asnumpy()) for c in ckpts] == [8, 8]
    names = [n for n in ckpts[0] if not n.startswith("optimizer.") and hasattr(ckpts[0][n], "asnumpy")
             and n not in ("epoch", "global_step", "num_classes")]
    assert len(names) > 20
    diff = max(np.abs(ckpts[0][n].asnumpy() - ckpts[1][n].asnumpy()).max() for n in names)
    assert diff <= 1e-6


@pytest.mark.parametrize("env, message", [
    ({"NODE_NUM": "two"}, "NODE_NUM must be a positive integer, got 'two'"),
    ({"NODE_NUM": "2", "NODE_RANK": "-1"}, "NODE_RANK must be an integer >= 0, got '-1'"),
    ({"NODE_NUM": "2", "NODE_RANK": "2"}, "NODE_RANK must be less than NODE_NUM (2), got 2"),
    ({"MASTER_PORT": "80"}, "MASTER_PORT must be an integer from 1024 to 65535, got '80'"),
    ({"MASTER_ADDR": "a b"}, "MASTER_ADDR must be node 0's address or host name, got 'a b'"),
])
def test_wrong_node_environment(env, message, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "run_distribute_train_gpu.sh"), str(data), "1"],
                          cwd=tmp_path, env=dict(ENV, **env), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and proc.stderr.startswith("usage:")
    assert proc.stderr.strip().splitlines()[-1] == "error: " + message
    assert os.listdir(tmp_path) == ["data"]


def rank_table(path, *servers):
    """An hccl rank table: servers = server_ids, 2 devices each, rank ids in order."""
    server_list = [{"server_id": sid, "host_nic_ip": "reserve",
                    "device": [{"device_id": str(d), "device_ip": f"192.168.{s}.{d + 1}", "rank_id": str(2 * s + d)}
                               for d in (0, 1)]}
                   for s, sid in enumerate(servers)]
    path.write_text(json.dumps({"version": "1.0", "server_count": str(len(servers)), "server_list": server_list,
                                "status": "completed"}))
    return str(path)


def dry_run(tmp_path, table, **env):
    return subprocess.run(["bash", os.path.join(REPO, "scripts", "run_distribute_train.sh"), str(tmp_path), table,
                           "--max_epoch", "2"], cwd=tmp_path, env=dict(ENV, DRY_RUN="1", **env),
                          capture_output=True, text=True, timeout=60)


def started(stdout):
    """(environment, train.py arguments) of each command the dry run printed."""
    runs = []
    for line in stdout.splitlines():
        if " taskset " in line:
            env, cmd = line.split(" taskset ", 1)
            runs.append((dict(kv.split("=", 1) for kv in env.split()), cmd.split()))
    return runs


def test_rank_table_starts_only_this_servers_devices(tmp_path):
    table = rank_table(tmp_path / "table.json", "198.51.100.1", "198.51.100.2")
    proc = dry_run(tmp_path, table, SERVER_ID="198.51.100.2")
    assert proc.returncode == 0, proc.stderr
    runs = started(proc.stdout)
    assert [(e["RANK_ID"], e["DEVICE_ID"], e["RANK_SIZE"]) for e, _ in runs] == [("2", "0", "4"), ("3", "1", "4")]
    for env, cmd in runs:
        assert env["RANK_TABLE_FILE"] == table
        assert cmd[cmd.index("--device_target") + 1] == "Ascend" and cmd[-4:-1] == ["--max_epoch", "2", ">"]
        assert cmd[-1] == str(tmp_path / "train_parallel" / f"worker_{env['RANK_ID']}.log")
    assert not (tmp_path / "train_parallel").exists()  # a dry run starts and writes nothing


def test_rank_table_finds_this_host_by_its_addresses(tmp_path):
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    table = rank_table(tmp_path / "table.json", "198.51.100.1", "127.0.0.1")
    proc = dry_run(tmp_path, table)
    assert proc.returncode == 0, proc.stderr
    assert [e["RANK_ID"] for e, _ in started(proc.stdout)] == ["2", "3"]


@pytest.mark.parametrize("server_id", [None, "198.51.100.9"])
def test_rank_table_without_this_host(server_id, tmp_path):
    table = rank_table(tmp_path / "table.json", "198.51.100.1", "198.51.100.2")
    proc = dry_run(tmp_path, table, **({"SERVER_ID": server_id} if server_id else {}))
    assert proc.returncode != 0 and proc.stderr.startswith("usage:")
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: rank table {table}: no server of it is this host: server_ids "
                           f"198.51.100.1, 198.51.100.2, this host ")
    assert last.endswith("set SERVER_ID to this server's server_id")
    if server_id:
        assert f"this host {server_id};" in last
    assert "taskset" not in proc.stdout


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["server_list"][1]["device"][1].update(rank_id="5"), "its rank_ids must be 0..3, each once"),
    (lambda t: t["server_list"][1]["device"][1].update(device_id="0"), "server 198.51.100.2 lists device_id 0 twice"),
    (lambda t: t["server_list"][0]["device"][0].update(rank_id="x"), "rank_id on server 198.51.100.1 must be"),
    (lambda t: t["server_list"][0].pop("server_id"), "server_list[0] needs a server_id and a device list"),
    (lambda t: t["server_list"][0].update(server_id="198.51.100.2"), "several servers of it are this host"),
])
def test_rank_table_errors(edit, message, tmp_path):
    from src.errors import UserError
    from model_utils.rank_table import local_devices
    table = json.loads(open(rank_table(tmp_path / "table.json", "198.51.100.1", "198.51.100.2")).read())
    assert local_devices(table, ["198.51.100.2"]) == (4, [(2, 0), (3, 1)])
    edit(table)
    with pytest.raises(UserError, match=re.escape(message)):
        local_devices(table, ["198.51.100.2"])


def test_two_nodes_evaluate_without_a_shared_folder(node1_netns, shapes64, tmp_path):
    """Distributed eval over the two nodes, each writing into its own eval_dir: the ranks' results meet over
    the collective layer, and node 0 writes the stats.json and predictions.json of a single process."""
    from model_utils.config import load_config
    from src.formats.checkpoint import network_parameters, save_checkpoint
    from src.models.yolo import build_network
    from src.models.layers import HeadConv
    network = build_network(ModelSpec.from_config(load_config(["--config_path", TINY_CFG])))
    for _, cell in network.cells_and_names():
        if isinstance(cell, HeadConv):  # objectness and classes near 0.7: boxes everywhere, whatever the weights
            cell.conv.bias.set_data(ms.Tensor(np.ones(cell.conv.bias.shape, np.float32)))
    ckpt = str(tmp_path / "random.ckpt")
    save_checkpoint(network_parameters(network), ckpt)
    args = [os.path.join(REPO, "eval.py"), "--config_path", TINY_CFG, "--data_dir", shapes64, "--pretrained", ckpt,
            "--testing_shape", "64"]
    procs = []
    for node in (0, 1):
        folder = tmp_path / f"node{node}"
        folder.mkdir()
        cmd = [os.path.join(BIN, "msrun"), "--worker_num=2", "--local_worker_num=1", f"--node_rank={node}",
               f"--master_addr={NODE0_ADDR}", f"--master_port={PORT}", f"--log_dir={folder / 'logs'}",
               "--join=True", *args, "--eval_dir", str(folder / "eval"), "--is_distributed", "True"]
        if node == 1:
            cmd = ["ip", "netns", "exec", node1_netns, *cmd]
        procs.append(subprocess.Popen(cmd, cwd=folder, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    single = subprocess.run([sys.executable, *args, "--eval_dir", str(tmp_path / "single")], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    stats = [json.loads((tmp_path / d / "stats.json").read_text()) for d in ("single", "node0/eval")]
    for s in stats:
        s.pop("seconds")
    assert stats[0] == stats[1] and stats[0]["images"] == 2
    predictions = [json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("single", "node0/eval")]
    key = lambda r: (r["image_id"], r["category_id"], -r["score"], r["bbox"])  # noqa: E731
    assert sorted(predictions[0], key=key) == sorted(predictions[1], key=key) and predictions[0]
    assert not (tmp_path / "node1" / "eval" / "stats.json").exists()
