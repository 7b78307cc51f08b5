#!/usr/bin/env python3
"""Generate data of the kind of examples/weather, at any size, deterministically.

  python3 bench/peers/sdp/generate_weather.py --rows 1000000 --out /tmp/sdp-data \
      [--seed 42] [--files 8] [--stations 200] [--days 90]

Writes, under OUT (which it empties of earlier readings/, stations/ and station_changes/
first):

  readings/eu/part-NNNN.jsonl       {"station", "observed_at" (ISO, Z), "temp_c", "humidity" 0..1}
  readings/us/part-NNNN.jsonl.gz   {"id", "time" ("YYYY-MM-DD HH:MM:SS"), "temp_f", "rh" 0..100}
  stations/stations.csv            station_id,name,country,elevation_m (RFC 4180: names with
                                   commas are quoted, one name has doubled quotes)
  station_changes/                 empty: the example's AUTO CDC flows read this folder (its
                                   change feed), and the benchmark leaves them out on both
                                   sides (see weather_sdp.py), but medallion plans every flow
                                   of the bundle, so the folder must exist

About half the rows go to each network, spread over --files files per network. Timestamps are
spread over --days days (UTC) so daily_by_country has many groups. A tiny share of readings
(--implausible-rate) have an implausible temperature (the warn expectation
plausible_temperature keeps them), and a tiny share (--empty-station-rate) have an empty station
(the DROP ROW expectation known_station drops them). stations.csv covers every station id used,
unless --unknown-station-rate > 0 adds readings of a station that is not in it (the inner join
into readings_enriched then drops them).

Standard library only. Prints a JSON summary on stdout, with the row counts each table of the
pipeline should end with (the `expected` object).
"""

import argparse
import csv
import gzip
import json
import os
import random
import shutil
import sys
import time
from datetime import date, timedelta

EU_COUNTRIES = ["NL", "DE", "FR", "CH", "BE", "ES", "IT", "AT"]
US_COUNTRIES = ["US", "US", "US", "CA"]  # the us network: mostly US, some Canadian stations
PLACES = {
    "NL": ["Amsterdam", "De Bilt", "Rotterdam", "Eindhoven", "Groningen"],
    "DE": ["Berlin", "Hamburg", "München", "Köln", "Frankfurt"],
    "FR": ["Paris", "Lyon", "Marseille", "Toulouse", "Lille"],
    "CH": ["Zürich", "Genève", "Basel", "Bern", "Lugano"],
    "BE": ["Brussel", "Antwerpen", "Gent", "Liège", "Uccle"],
    "ES": ["Madrid", "Barcelona", "Sevilla", "Valencia", "Bilbao"],
    "IT": ["Roma", "Milano", "Napoli", "Torino", "Bologna"],
    "AT": ["Wien", "Graz", "Linz", "Salzburg", "Innsbruck"],
    "US": ["New York", "Denver", "Chicago", "Seattle", "Miami", "Boston", "Phoenix"],
    "CA": ["Toronto", "Montréal", "Vancouver", "Calgary", "Halifax"],
}
SITES = ["Airport", "Central Park", "Harbour", "University", "North", "Hill"]
START = date(2026, 1, 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, required=True, help="readings in all (both networks)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--files", type=int, default=8, help="files per network (default 8)")
    p.add_argument("--stations", type=int, default=200, help="stations in all (default 200)")
    p.add_argument("--days", type=int, default=90, help="days the timestamps span (default 90)")
    p.add_argument("--implausible-rate", type=float, default=0.001)
    p.add_argument("--empty-station-rate", type=float, default=0.001)
    p.add_argument("--unknown-station-rate", type=float, default=0.0)
    a = p.parse_args(argv)
    if a.rows < 0 or a.files < 1 or a.stations < 2 or a.days < 1:
        p.error("need --rows >= 0, --files >= 1, --stations >= 2, --days >= 1")
    return a


def make_stations(rng, k):
    """Half eu, half us stations: (station_id, name, country, elevation_m)."""
    n_eu = k // 2
    out = {"eu": [], "us": []}
    for net, n, countries in (("eu", n_eu, EU_COUNTRIES), ("us", k - n_eu, US_COUNTRIES)):
        for i in range(n):
            country = countries[i % len(countries)]
            place = rng.choice(PLACES[country])
            r = rng.random()
            if r < 0.3:
                name = f"{place}, {rng.choice(SITES)}"          # a comma: quoted in the CSV
            elif r < 0.31 or i == 0:
                name = f'{place} "{rng.choice(SITES)}", {i}'    # quotes: doubled in the CSV
            else:
                name = f"{place} {rng.choice(SITES)} {i}"
            sid = f"{net.upper()}{i + 1:04d}"
            out[net].append((sid, name, country, rng.randint(-5, 2500)))
    return out


def main(argv=None):
    a = parse_args(argv)
    t0 = time.monotonic()
    rng = random.Random(a.seed)
    stations = make_stations(rng, a.stations)
    country_of = {s[0]: s[2] for net in stations.values() for s in net}

    for sub in ("readings", "stations", "station_changes"):
        shutil.rmtree(os.path.join(a.out, sub), ignore_errors=True)
    os.makedirs(os.path.join(a.out, "readings", "eu"))
    os.makedirs(os.path.join(a.out, "readings", "us"))
    os.makedirs(os.path.join(a.out, "stations"))
    os.makedirs(os.path.join(a.out, "station_changes"))

    with open(os.path.join(a.out, "stations", "stations.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["station_id", "name", "country", "elevation_m"])
        for net in ("eu", "us"):
            w.writerows(stations[net])

    days_iso = [(START + timedelta(d)).isoformat() for d in range(a.days)]
    hms = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]  # minute of day -> "HH:MM:"
    # Seasonal base temperature per day (Celsius), so the daily averages move.
    n_eu = a.rows // 2
    per_net = {"eu": n_eu, "us": a.rows - n_eu}
    summary = {"rows": a.rows, "networks": {}, "files": 0, "bytes": 0, "stations": a.stations,
               "seed": a.seed, "days": a.days}
    totals = {"empty_station": 0, "unknown_station": 0, "implausible_kept": 0}
    groups = set()  # (country, day) pairs of readings that reach readings_enriched

    rand = rng.random
    randrange = rng.randrange
    for net in ("eu", "us"):
        ids = [s[0] for s in stations[net]]
        n = per_net[net]
        files = a.files
        net_stats = {"rows": n, "files": files, "bytes": 0, "empty_station": 0,
                     "unknown_station": 0, "implausible": 0}
        for fi in range(files):
            count = n // files + (1 if fi < n % files else 0)
            lines = []
            append = lines.append
            for _ in range(count):
                day = randrange(a.days)
                minute = randrange(1440)
                sec = randrange(60)
                r = rand()
                if r < a.empty_station_rate:
                    sid = ""
                    net_stats["empty_station"] += 1
                elif r < a.empty_station_rate + a.unknown_station_rate:
                    sid = f"XX{randrange(10000):04d}"
                    net_stats["unknown_station"] += 1
                else:
                    sid = ids[randrange(len(ids))]
                # plausible: -30..40 C around a seasonal curve; implausible: 99 or -120 C.
                if rand() < a.implausible_rate:
                    temp_c = 99.0 if rand() < 0.5 else -120.0
                    implausible = True
                else:
                    temp_c = round(-5.0 + day * 0.2 + (minute / 1440.0) * 8.0 + rand() * 20.0, 1)
                    implausible = False
                if sid and implausible:
                    totals["implausible_kept"] += 1
                if sid and sid[:2] != "XX":
                    groups.add((country_of[sid], days_iso[day]))
                if implausible:
                    net_stats["implausible"] += 1
                if net == "eu":
                    append(f'{{"station": "{sid}", "observed_at": "{days_iso[day]}T{hms[minute]}'
                           f'{sec:02d}Z", "temp_c": {temp_c}, "humidity": {rand():.2f}}}\n')
                else:
                    temp_f = round(temp_c * 9 / 5 + 32, 2)
                    append(f'{{"id": "{sid}", "time": "{days_iso[day]} {hms[minute]}{sec:02d}", '
                           f'"temp_f": {temp_f}, "rh": {randrange(101)}}}\n')
            data = "".join(lines).encode("utf-8")
            if net == "eu":
                path = os.path.join(a.out, "readings", "eu", f"part-{fi:04d}.jsonl")
                with open(path, "wb") as f:
                    f.write(data)
            else:
                path = os.path.join(a.out, "readings", "us", f"part-{fi:04d}.jsonl.gz")
                with open(path, "wb") as raw:
                    # mtime=0: the same seed gives the same bytes.
                    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                        gz.write(data)
            net_stats["bytes"] += os.path.getsize(path)
        totals["empty_station"] += net_stats["empty_station"]
        totals["unknown_station"] += net_stats["unknown_station"]
        summary["networks"][net] = net_stats
        summary["files"] += files
        summary["bytes"] += net_stats["bytes"]

    summary["bytes"] += os.path.getsize(os.path.join(a.out, "stations", "stations.csv"))
    readings = a.rows - totals["empty_station"]
    summary["bad_rows"] = {
        "empty_station": totals["empty_station"],            # dropped by known_station
        "implausible": sum(s["implausible"] for s in summary["networks"].values()),
        "implausible_kept": totals["implausible_kept"],      # in readings: plausible_temperature fails
        "unknown_station": totals["unknown_station"],        # dropped by the inner join
    }
    summary["expected"] = {
        "stations": a.stations,
        "readings": readings,
        "readings_enriched": readings - totals["unknown_station"],
        "daily_by_country": len(groups),
    }
    summary["seconds"] = round(time.monotonic() - t0, 2)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
