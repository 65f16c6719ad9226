"""What several test files share that is not a fixture (fixtures live in conftest.py): one module per idea.
Test files import from here, never from one another."""
