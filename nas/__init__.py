"""The search: controllers, rewards, trials, the Ray runner, experiment config, CLI, export."""
