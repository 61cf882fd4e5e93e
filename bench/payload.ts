/**
 * The benchmark's payload, apart from the MQTT load that carries it, so that
 * micro-benchmarks and tests can use it without loading an MQTT client.
 * @module
 */

/**
 * One payload as a Python datalogger's `json.dumps` writes it (", " and ": "):
 * SPEC §1's four devices, with more registers so it weighs about 1 KB, values
 * that vary with `seed`, and two `null` registers.
 *
 * @example
 * ```ts
 * JSON.parse(benchPayload(1625576100, 7)).r.length; // 4
 * ```
 */
export function benchPayload(t: number, seed: number): string {
  // A small deterministic generator (mulberry32): every register gets its own full-precision value.
  let state = seed | 0;
  const v = (base: number, spread: number) => {
    state = (state + 0x6d2b79f5) | 0;
    let x = Math.imul(state ^ (state >>> 15), 1 | state);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return base + (((x ^ (x >>> 14)) >>> 0) / 4294967296) * spread;
  };
  const payload = {
    t,
    r: [
      {
        _d: "logger",
        _vid: "strato-1",
        boot_time: 1625563315,
        cpu_load: Number(v(0.01, 0.9).toFixed(2)),
        memory_usage: Number(v(15, 10).toFixed(1)),
        rssi: -Math.round(v(50, 40)),
      },
      {
        _d: "logger_strato",
        _vid: "strato-1",
        cpu_temp: v(55, 10),
        disk_usage: 45.8,
      },
      {
        _d: "diesel_sensor",
        _vid: "gamicos-1",
        level: v(0.2, 0.7),
        genset_fuel_volume: v(1000, 2000),
      },
      {
        _d: "dse855",
        _vid: "dse-1",
        E: 86744200 + seed,
        P: Math.round(v(10000, 8000)),
        Q: Math.round(v(100, 900)),
        S: Math.round(v(10000, 8000)),
        V_L1: v(225, 10),
        V_L2: v(225, 10),
        V_L3: 229.70000000000002,
        I_L1: v(20, 5),
        I_L2: v(20, 5),
        I_L3: v(20, 5),
        freq: v(49.9, 0.2),
        pf: v(0.9, 0.1),
        run_hours: 12044 + seed,
        E_day: v(0, 500),
        fuel_used: null,
        temp_oil: null,
        temp_coolant: v(70, 20),
        oil_pressure: v(3, 2),
        battery_voltage: v(24, 4),
      },
    ],
    m: {
      snap_rev: 670,
      config_id: "c5b2543",
      reading_duration: 0.9248790740966797,
      reading_offset: 0,
    },
  };
  return JSON.stringify(payload).replaceAll(",", ", ").replaceAll('":', '": ');
}
