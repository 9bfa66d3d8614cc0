"""When the monitor evaluates: a fixed cadence, or an adaptive one that waits for the training signals to move."""

from rubric_rft.training.monitor.cadence import Cadence, due, training_signals

ADAPTIVE = Cadence(adaptive=True, window=2, reward_move=0.1, length_move=0.25, max_gap=8)


def logs(*steps: tuple[float, float]) -> list[dict]:
    """TRL's log history: one entry per step with its mean reward and completion length, and one without them."""
    return [{"loss": 0.0}] + [{"reward": r, "completions/mean_length": n} for r, n in steps]


def test_a_fixed_cadence_evaluates_every_monitor_steps_whatever_the_signals():
    flat = logs(*[(0.5, 40)] * 6)
    assert [due(step, 2, Cadence(), {"step": 0}, flat) for step in range(1, 7)] == [
        None, "cadence", None, "cadence", None, "cadence"]


def test_the_signals_are_window_means_of_the_logged_steps():
    history = logs((0.2, 60), (0.4, 50), (0.6, 30))
    assert training_signals(history, 2) == {"train_reward": 0.5, "train_length": 40}
    assert training_signals(history, 2, first=True) == {"train_reward": 0.30000000000000004, "train_length": 55}
    assert training_signals([{"loss": 1.0}], 2) == {"train_reward": None, "train_length": None}


def test_an_adaptive_cadence_evaluates_when_reward_or_length_moved_or_the_gap_is_long():
    last = {"step": 4, "train_reward": 0.5, "train_length": 40.0}
    assert due(6, 2, ADAPTIVE, last, logs((0.5, 40), (0.55, 44))) is None  # small moves: skipped
    assert due(5, 2, ADAPTIVE, last, logs((0.9, 40), (0.9, 40))) is None  # only at monitor_steps multiples
    assert due(6, 2, ADAPTIVE, last, logs((0.6, 40), (0.65, 40))) == "reward_moved"  # 0.125 >= 0.1
    assert due(6, 2, ADAPTIVE, last, logs((0.5, 30), (0.5, 28))) == "length_moved"  # 29 is 27% below 40
    assert due(12, 2, ADAPTIVE, last, logs((0.5, 40), (0.5, 40))) == "max_gap"
    assert due(2, 2, ADAPTIVE, None, logs()) == "cadence"  # no evaluation yet


def test_the_step_0_evaluation_is_compared_with_the_first_logged_steps():
    start = {"step": 0, "train_reward": None, "train_length": None}
    assert due(2, 2, ADAPTIVE, start, logs((0.3, 64), (0.3, 64))) is None
    assert due(4, 2, ADAPTIVE, start, logs((0.3, 64), (0.3, 64), (0.5, 64), (0.5, 64))) == "reward_moved"


def test_with_drift_move_a_policy_that_moved_from_the_start_is_evaluated_though_its_reward_is_flat():
    cadence = Cadence(adaptive=True, window=2, drift_move=0.5, max_gap=8)
    flat = logs((0.5, 40), (0.5, 40))
    last = {"step": 4, "train_reward": 0.5, "train_length": 40.0, "drift": 4.0}
    assert due(6, 2, cadence, last, flat, drift=5.0) is None  # 1.0 < 0.5 x 4.0
    assert due(6, 2, cadence, last, flat, drift=6.5) == "policy_moved"
    assert due(6, 2, cadence, last, flat, drift=1.5) == "policy_moved"  # moved back towards the start
    assert due(6, 2, cadence, {**last, "drift": 0.0}, flat, drift=0.4) is None  # below the floor of 0.5 nats
    assert due(6, 2, cadence, {**last, "drift": 0.0}, flat, drift=0.6) == "policy_moved"
    assert due(6, 2, cadence, last, flat, drift=None) is None  # not measured
    assert due(6, 2, ADAPTIVE, last, flat, drift=60.0) is None  # drift_move unset: not read
