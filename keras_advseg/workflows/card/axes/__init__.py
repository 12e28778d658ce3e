"""One module per axis of the card: how it reads its section from its command's folder, checks
it, shows it (card rows, MLflow metrics) and scores it on the leaderboard. The table that joins
them is :mod:`keras_advseg.workflows.card.table`."""
