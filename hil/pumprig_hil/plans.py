"""Plans and the ideal the HIL suites measure against, for this repository's suites and a
lab's own: `from pumprig_hil.plans import dye_plan, example, start`."""

from pumpcore.schedule import Clock
from pumprig.firmware import examples_dir
from pumprig.plans import load_plan_file
from pumprig.simulate import Oracle

EXAMPLES = examples_dir()
PULLIN_HZ = 50  # board json pullin_step_hz: the schedule's ramp starts there


def example(name):
    """(plan, meta) of examples/<name>*.toml."""
    (path,) = sorted(EXAMPLES.glob(name + "*.toml"))
    return load_plan_file(path)


def dye_plan(ng_day, conc_ng_ml=1_000_000, **extra):
    """A fast plan for real-time benches: an unlisted drug states its own caps."""
    plan = {"v": 1, "drug": "hil-dye", "custom_drug": True, "conc_ng_ml": conc_ng_ml,
            "basal": {"kind": "continuous", "ng_day": ng_day},
            "caps": {"ng_24h": 10 ** 10, "ng_1h": 10 ** 10}}
    plan.update(extra)
    return plan


class Ideal:
    """The plan's ideal cumulative steps over rig time (pumpcore.schedule integrated by the
    host, as `pumprig simulate` does), independent of the firmware's delivery account."""

    def __init__(self, plan, program_ms, step_pl, clock_ms, epoch_s, offset_s=0,
                 next_change_epoch_s=0, next_offset_s=0):
        clock = Clock()
        clock.set(clock_ms, epoch_s, offset_s, next_change_epoch_s or 0, next_offset_s or 0)
        self.step_pl = step_pl
        self.oracle = Oracle(plan, program_ms, clock, step_pl,
                             PULLIN_HZ * 86_400 * step_pl // 1000, 0)

    def steps(self, t_ms):
        return self.oracle.ideal_nl(t_ms) * 1000 / self.step_pl

    def add_bolus(self, t_ms, nl, dur_s):
        self.oracle.add_bolus(t_ms, nl, dur_s * 1000)


def start(rig, plan, fill_nl=20_000_000, epoch_s=None, offset_s=0, next_change_epoch_s=None,
          next_offset_s=None):
    """Clock, program, refill; returns (Ideal, instrument steps at the start)."""
    from pumprig_hil.rig import EPOCH0

    ep = EPOCH0 if epoch_s is None else epoch_s
    rig.set_clock(ep, offset_s, next_change_epoch_s, next_offset_s)
    clock_ms = rig.clock[0]
    s0 = rig.sample("start")
    program_ms = rig.now_ms()
    plan = rig.client.plan_set(plan)["plan"]  # the normalised form
    # refill after programming, so the old plan's thresholds never judge the new fill
    rig.client.refill(fill_nl)
    rig.client.ack()
    step_pl = rig.client.calib_get()["step_pl"]
    ideal = Ideal(plan, program_ms, step_pl, clock_ms, ep, offset_s,
                  next_change_epoch_s, next_offset_s)
    return ideal, s0
