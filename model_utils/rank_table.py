"""This server's devices in an Ascend (hccl) rank table, for scripts/run_distribute_train.sh.

    python -m model_utils.rank_table RANK_TABLE_FILE SERVER_ID_OR_ADDRESS...

prints the table's device count (RANK_SIZE) on the first line, then "rank_id device_id" for each device of
the one server whose server_id is among the given ids/addresses (SERVER_ID, or this host's addresses).
"""
import json
import sys
from typing import List, Sequence, Tuple

from src.errors import UserError, run_cli


def _index(value, what: str) -> int:
    """A rank_id or device_id: the table writes them as strings ("3"), plain integers are accepted too."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if number < 0:
        raise UserError(f"{what} must be an integer >= 0, got {value!r}")
    return number


def local_devices(table: dict, addresses: Sequence[str]) -> Tuple[int, List[Tuple[int, int]]]:
    """(rank size of the whole table, [(rank_id, device_id)] of the server whose server_id is in addresses)."""
    servers = table.get("server_list") if isinstance(table, dict) else None
    if not isinstance(servers, list):
        raise UserError("it has no server_list")
    ranks, mine, ids = [], [], []
    for i, server in enumerate(servers):
        devices = server.get("device") if isinstance(server, dict) else None
        if not isinstance(devices, list) or "server_id" not in server:
            raise UserError(f"server_list[{i}] needs a server_id and a device list")
        ids.append(str(server["server_id"]))
        local = ids[-1] in addresses
        if local and mine:
            raise UserError(f"several servers of it are this host ({', '.join(a for a in ids if a in addresses)}); "
                            f"set SERVER_ID to the server_id of this one")
        seen = set()
        for device in devices:
            if not isinstance(device, dict) or "rank_id" not in device or "device_id" not in device:
                raise UserError(f"a device of server {ids[-1]} needs rank_id and device_id")
            rank = _index(device["rank_id"], f"rank_id on server {ids[-1]}")
            dev = _index(device["device_id"], f"device_id on server {ids[-1]}")
            if dev in seen:
                raise UserError(f"server {ids[-1]} lists device_id {dev} twice")
            seen.add(dev)
            ranks.append(rank)
            if local:
                mine.append((rank, dev))
        if local and not devices:
            raise UserError(f"server {ids[-1]} (this host) lists no device")
    if not ranks:
        raise UserError("it lists no device")
    if sorted(ranks) != list(range(len(ranks))):
        raise UserError(f"its rank_ids must be 0..{len(ranks) - 1}, each once, got {sorted(ranks)}")
    if not mine:
        raise UserError(f"no server of it is this host: server_ids {', '.join(ids)}, this host "
                        f"{', '.join(addresses) or '(no address found)'}; set SERVER_ID to this server's server_id")
    return len(ranks), mine


def main() -> None:
    if len(sys.argv) < 2:
        raise UserError("usage: python -m model_utils.rank_table RANK_TABLE_FILE SERVER_ID_OR_ADDRESS...")
    path = sys.argv[1]
    try:
        with open(path) as f:
            table = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the rank table {path}: {e}") from None
    try:
        size, mine = local_devices(table, [a for a in sys.argv[2:] if a])
    except UserError as e:
        raise UserError(f"rank table {path}: {e}") from None
    print(size)
    for rank, device in mine:
        print(rank, device)


if __name__ == "__main__":
    run_cli(main)
