"""The virtual rig's analog inputs: the battery (through its divider) and the line pressure
sensor, as the ADC readings the board takes.

The cell drains with time and with motor load; a fault may force its voltage. The pressure
follows the volume held in the line behind an occlusion (its compliance).
"""

BATTERY_START_MV = 3650
# A 5-7 year cell: about 0.2 mV a day at implant rates takes 3650 mV to ERI (3300) in ~5 years.
DRAIN_UV_PER_DAY = 150          # self-discharge and electronics, µV per day
DRAIN_NV_PER_STEP = 60          # motor load, nV per step
COMPLIANCE_NL_PER_KPA = 20      # line compliance behind an occlusion
MS_PER_DAY = 86400000


class Analog:
    def __init__(self, config):
        self.cfg = config
        pins = config["pins"]
        self.pin_vbat = pins.get("vbat_adc")
        self.pin_pressure = pins.get("pressure_adc")
        self.battery_forced_mv = None

    def battery_mv(self, now_ms, pulses):
        if self.battery_forced_mv is not None:
            return self.battery_forced_mv
        drop_uv = now_ms * DRAIN_UV_PER_DAY // MS_PER_DAY
        drop_uv += pulses * DRAIN_NV_PER_STEP // 1000
        return max(0, BATTERY_START_MV - drop_uv // 1000)

    @staticmethod
    def pressure_kpa(held_pl):
        return held_pl // 1000 // COMPLIANCE_NL_PER_KPA

    def mv_to_u16(self, mv):
        """The ADC reading for mv at the pin (boards convert back rounding to the nearest mV,
        hw/common.py, so this round trip is exact)."""
        ref = self.cfg.get("adc_ref_mv", 3300)
        u = (mv * 65535 + ref // 2) // ref
        return max(0, min(65535, u))

    def u16(self, pin, battery_mv, pressure_kpa):
        """The reading at an ADC pin, given the cell voltage and the line pressure now."""
        if pin == self.pin_vbat:
            num = self.cfg.get("vbat_div_num", 2)
            den = self.cfg.get("vbat_div_den", 1)
            # the divider: pin mV = cell mV * den / num (2 mV resolution at the cell for 2:1)
            return self.mv_to_u16((battery_mv * den + num // 2) // num)
        if pin == self.pin_pressure:
            p = self.cfg.get("pressure", {})
            num = p.get("kpa_per_mv_num", 1)
            den = p.get("kpa_per_mv_den", 10)
            mv = p.get("zero_mv", 330) + (pressure_kpa * den + num // 2) // num
            return self.mv_to_u16(mv)
        return 0
