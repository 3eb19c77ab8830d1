"""The sync store: models, the unit of work (db), book-keeping, sync state, data writers, migrations."""
