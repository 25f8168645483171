"""Settings shared through the database."""
from agentd.app import create_app
from agentd.config import Config


def test_processes_on_one_database_share_the_generated_secret(database_url, tmp_path):
    """Widget tokens signed by one worker must verify in another and after a restart."""
    settings = {"database_url": database_url, "agents_dir": str(tmp_path), "secret_key": ""}
    first = create_app(Config.from_env(**settings))
    second = create_app(Config.from_env(**settings))
    assert first.secret_key == second.secret_key and len(first.secret_key) == 64
    configured = create_app(Config.from_env(**{**settings, "secret_key": "from-the-operator"}))
    assert configured.secret_key == "from-the-operator"
    for app in (first, second, configured):
        app.extensions["agentd"].db.close()
