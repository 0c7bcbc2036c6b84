import pytest

# Shared test helpers imported by test modules: let pytest rewrite their asserts on import.
pytest.register_assert_rewrite("tests.sink_servers")
