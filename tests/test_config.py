import dataclasses
from pathlib import Path

import pytest

from guardgrid.config import ConfigError, Settings, env_name, load_settings, markdown_table


def test_defaults_load_from_an_empty_environment():
    settings = load_settings({})
    assert settings == Settings()


def test_the_three_shared_variables_mean_the_same_for_every_service():
    settings = load_settings({"GUARDGRID_CLUSTER_FILE": "/c.yaml", "GUARDGRID_PREDICTOR_URL": "http://p:9100",
                              "GUARDGRID_PROMETHEUS_URL": "http://prom:9090"})
    assert (settings.cluster_file, settings.predictor_url, settings.prometheus_url) == \
        ("/c.yaml", "http://p:9100", "http://prom:9090")


def test_typed_values_are_converted_and_bad_ones_name_the_variable():
    settings = load_settings({"GUARDGRID_RISK_THRESHOLD": "0.2", "GUARDGRID_MIGRATION_ENABLED": "yes",
                              "GUARDGRID_MAX_STANDBY_SLOTS": "7"})
    assert settings.risk_threshold == 0.2 and settings.migration_enabled and settings.max_standby_slots == 7
    with pytest.raises(ConfigError, match="GUARDGRID_RISK_THRESHOLD"):
        load_settings({"GUARDGRID_RISK_THRESHOLD": "high"})
    with pytest.raises(ConfigError, match="GUARDGRID_RISK_THRESHOLD.*between"):
        load_settings({"GUARDGRID_RISK_THRESHOLD": "1.5"})
    with pytest.raises(ConfigError, match="GUARDGRID_MIGRATION_DRY_RUN"):
        load_settings({"GUARDGRID_MIGRATION_DRY_RUN": "maybe"})


def test_inconsistent_hysteresis_is_refused():
    with pytest.raises(ConfigError, match="REACTIVE_EXIT"):
        load_settings({"GUARDGRID_REACTIVE_ENTER_LOAD": "0.7", "GUARDGRID_REACTIVE_EXIT_LOAD": "0.8"})


def test_the_readme_documents_every_setting():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [env_name(f.name) for f in dataclasses.fields(Settings) if env_name(f.name) not in readme]
    assert not missing, f"README lacks {missing}; regenerate with `python -m guardgrid.config`"
    assert markdown_table().splitlines()[0] in readme
