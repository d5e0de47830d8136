"""README's speed table is the one `python -m benchmarks.readme_table` generates from benchmarks/results/*.json."""

from benchmarks import readme_table


def test_speed_table_in_the_readme_is_current():
    assert not readme_table.is_stale(), "README.md's speed table is stale: run python -m benchmarks.readme_table"


def test_the_table_stays_short_and_every_row_points_at_its_result():
    rows = readme_table.table().splitlines()[2:]
    assert 0 < len(rows) <= 15
    for row in rows:
        name = row.rsplit("](benchmarks/results/", 1)[1].split(".md)")[0]
        assert (readme_table.RESULTS / f"{name}.json").exists()
