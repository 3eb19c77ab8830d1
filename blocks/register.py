"""Register syncflow's block types with the Prefect API (rerunnable).

python -m blocks.register      # or: prefect block register -m blocks.seq_http -m blocks.database -m blocks.telegram
"""

from __future__ import annotations

from blocks.database import DatabaseInstance
from blocks.seq_http import SeqHttpInstance
from blocks.telegram import TelegramAccountBlock


def register() -> list[str]:
    slugs = []
    for block_type in (SeqHttpInstance, DatabaseInstance, TelegramAccountBlock):
        block_type.register_type_and_schema()
        slugs.append(block_type.get_block_type_slug())
    return slugs


if __name__ == "__main__":
    for slug in register():
        print(f"registered block type {slug}")
