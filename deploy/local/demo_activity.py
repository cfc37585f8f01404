"""The demo territory of activity-svc: its org-unit tree and three years of activity.

``make run`` calls :func:`load_activity_demo` once every component is ready: when
activity-svc holds no establishment yet, it creates the tree and imports the records
through the gateway's public API, as the establishments' systems would.

What is generated (pure, deterministic: one ``random.Random`` per unit, seeded from
:data:`SEED`, the unit's code and the current year; "today" is a parameter):

- the "G4" territory (:data:`TERRITORY`): the CHU de la Vallée (8 pôles, 30 units) and
  three general hospitals (3 or 4 pôles, 7 to 10 units each), with UF codes and the
  installed beds of the inpatient units, all valid from January 1st of the first year;
- the records of January 1st two years ago up to yesterday, of every kind: stays,
  outpatient acts, imaging exams, consultations, expenses and revenue.

Scale. Inpatient units are real-sized (about 750 installed beds in the territory), so
their occupancy, length of stay, severity mix and outpatient surgery rate are those of
real hospitals. The outpatient flows (consultations, acts, imaging exams) are scaled
down to about 1/25 of a real CHU's, and expenses and revenue follow the activity
generated. With "today" in late November this is about 450 000 records (about 70 %
stays), generated in a few seconds.

Rates (per establishment, computed by ``tests/test_demo_activity.py``): bed occupancy
80-95 % with a winter peak in medicine and paediatrics, average length of stay 4-8
days, severity levels 3-4 in 20-30 % of full stays, outpatient surgery rate about
55-65 % rising every year, outpatient acts 90-97 % coded with a median delay of 3-8
days (the acts of the last weeks are not all coded yet), scheduled activity low in
August and on public holidays, expenses about 65 % staff (title 1), 15 % medical
(title 2), 12 % general (title 3), 8 % depreciation and financial (title 4).

Stories for the dashboards to show, this year against the same period last year:

- a second MRI scanner opened in January at the CHU (UF 1102): the CHU's imaging
  exams rise by 10 to 13 %;
- the CHU's cardiology ward (UF 6101) closed 3 of its 30 beds on January 1st: its
  stays fall by about 9 %;
- the CHU's conventional radiology (UF 1103) lost coding staff: its coding
  completeness drops by about 12 points and its coding delay more than doubles;
- ambulatory surgery grows everywhere (+7 % a year) while full surgical stays shrink;
- the CHU's continuous care unit (UF 5202) moved from the pôle urgences-réanimation
  to the pôle chirurgie on July 1st of last year ("as it was" vs "constant scope").
- the CHU's acute geriatrics (UF 2201) takes frailer patients this year: severity
  levels 3-4 go from about half of its full stays to about two thirds, each stay is
  longer and valued higher, and it has fewer of them (the case-mix);
- the pôle cardio-vasculaire's full stays fall by about 5 %, nearly all of it its
  cardiology ward's (the contributions of its children).

No patient data at all: a record carries only its sending system's pseudonymous id
(``PMSI-CHU-2025-000123``).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from itertools import accumulate, groupby
from operator import itemgetter
from typing import Any
from urllib.parse import quote

import httpx

from ght_gateway import demo

SEED = 20240101
TERRITORY = "GHT-G4"
IMAGING_POLE = "CHU-IMG"
"""The pôle of the demo cadre de gestion (``cadre.chu`` in ``ght_gateway.demo``)."""

Record = dict[str, Any]

# --------------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------------

Season = tuple[float, ...]
"""Twelve monthly factors, January first; normalised to a mean of 1."""


def _season(*factors: float) -> Season:
    mean = sum(factors) / len(factors)
    return tuple(f / mean for f in factors)


WINTER = _season(1.12, 1.10, 1.03, 0.98, 0.96, 0.95, 0.92, 0.88, 0.96, 1.00, 1.04, 1.10)
"""Medicine, geriatrics, pneumology: flu and other winter epidemics."""
CHILDREN = _season(1.16, 1.12, 1.02, 0.97, 0.95, 0.92, 0.84, 0.80, 0.97, 1.03, 1.09, 1.17)
"""Paediatrics: bronchiolitis from November to February."""
ACUTE = _season(1.08, 1.06, 1.02, 0.98, 0.97, 0.97, 0.96, 0.94, 0.97, 1.00, 1.02, 1.06)
"""Emergencies, intensive care, cardiology, neurology."""
SCHEDULED = _season(1.03, 1.02, 1.06, 1.00, 0.95, 1.03, 0.90, 0.66, 1.03, 1.06, 1.04, 0.92)
"""Scheduled surgery, consultations, acts, imaging: the August low, May's bridges."""
BIRTHS = _season(0.97, 0.92, 0.99, 0.97, 1.00, 1.00, 1.06, 1.05, 1.06, 1.02, 0.97, 0.99)

Week = tuple[float, float, float, float, float, float, float]
"""Factors Monday to Sunday, then public holidays count as Sundays."""
DISCHARGES: Week = (1.00, 1.05, 1.05, 1.05, 1.30, 0.75, 0.55)
CONTINUOUS: Week = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
WEEKDAYS: Week = (1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0)


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


def french_holidays(year: int) -> frozenset[date]:
    """The eleven public holidays of metropolitan France."""
    easter = _easter(year)
    fixed = ((1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25))
    moving = (easter + timedelta(days=n) for n in (1, 39, 50))
    return frozenset({date(year, m, d) for m, d in fixed} | set(moving))


def _last_sunday(year: int, month: int) -> date:
    day = date(year, month, 31)
    return day - timedelta(days=(day.weekday() + 1) % 7)


@cache
def _summer_time(year: int) -> tuple[date, date]:
    return _last_sunday(year, 3), _last_sunday(year, 10)


def paris_offset(day: date, hour: int) -> str:
    """The UTC offset of Europe/Paris at ``hour`` local time (EU summer time rule)."""
    spring, autumn = _summer_time(day.year)
    if spring < day < autumn or (day == spring and hour >= 3) or (day == autumn and hour < 2):
        return "+02:00"
    return "+01:00"


# --------------------------------------------------------------------------------------------
# Profiles: what a kind of unit does, at which rates
# --------------------------------------------------------------------------------------------

Act = tuple[str, str, float]
"""(code, code system, amount in EUR)."""
Exam = tuple[str, float]
"""(CCAM code, amount in EUR)."""

ECG: Act = ("DEQP003", "CCAM", 14.26)
HOLTER: Act = ("DEQP005", "CCAM", 65.0)
ECHO_HEART: Act = ("DZQM006", "CCAM", 95.66)
SPIROMETRY: Act = ("GLQP012", "CCAM", 40.7)
GASTROSCOPY: Act = ("HEQE002", "CCAM", 96.14)
COLONOSCOPY: Act = ("HHQE005", "CCAM", 135.0)
EEG: Act = ("AAQP007", "CCAM", 74.0)
EMG: Act = ("AHQB027", "CCAM", 61.0)
CYSTOSCOPY: Act = ("JDQE001", "CCAM", 74.4)
PELVIC_ECHO: Act = ("JQQM010", "CCAM", 60.0)
INFILTRATION: Act = ("NZLB001", "CCAM", 39.0)
DRESSING: Act = ("K", "NGAP", 19.2)
ADVICE: Act = ("APC", "NGAP", 55.0)
SPECIALIST: Act = ("CS", "NGAP", 30.0)

CT: tuple[Exam, ...] = (("ACQK001", 135.0), ("ZBQK001", 140.0), ("ZCQK004", 165.0))
MRI: tuple[Exam, ...] = (("ACQN001", 230.0), ("NZQN001", 215.0), ("ZCQN002", 245.0))
XRAY: tuple[Exam, ...] = (
    ("ZBQK002", 21.28),
    ("NEQK010", 39.9),
    ("ZCQM001", 56.7),
    ("QEQK004", 66.42),
)
NUCLEAR: tuple[Exam, ...] = (("PAQL002", 320.0), ("ZZQL016", 980.0))

CONSULTATION_CODES: tuple[tuple[str, float, float], ...] = (
    ("CS", 30.0, 0.70),
    ("APC", 55.0, 0.15),
    ("C", 26.5, 0.15),
)


@dataclass(frozen=True)
class Profile:
    """The activity of a kind of unit; rates are per weekday unless told otherwise."""

    specialty: str
    season: Season = SCHEDULED
    # full stays: their rate follows the installed beds, occupancy and length of stay
    alos: float = 0.0
    occupancy: float = 0.0
    medical_roots: tuple[str, ...] = ()
    surgical_roots: tuple[str, ...] = ()
    surgical_share: float = 0.0
    severity: tuple[float, float, float, float] = (0.34, 0.38, 0.21, 0.07)
    discharge_week: Week = DISCHARGES
    base_tariff: float = 3300.0
    daily_supplement: float = 0.0
    # ambulatory (same-day) stays
    ambulatory: float = 0.0
    ambulatory_roots: tuple[str, ...] = ()
    # outpatient flows
    consultations: float = 0.0
    acts: float = 0.0
    act_codes: tuple[Act, ...] = ()
    imaging: float = 0.0
    imaging_week: Week = WEEKDAYS
    imaging_codes: tuple[Exam, ...] = ()
    external_share: float = 0.0
    """Share of the imaging exams done for outpatients: also billed as outpatient acts."""
    # finance
    titles: tuple[float, float, float, float] = (0.69, 0.11, 0.12, 0.08)
    other_revenue: float = 0.0
    """Revenue of title 2 of such a unit, as a share of its expenses."""

    @property
    def surgical(self) -> bool:
        return bool(self.surgical_roots) or any(r[2] == "C" for r in self.ambulatory_roots)


MEDICINE = Profile(
    "médecine interne",
    WINTER,
    alos=6.8,
    occupancy=0.88,
    medical_roots=("04M05", "10M02", "11M04", "16M11", "18M07", "23M20"),
    consultations=3,
    acts=1.5,
    act_codes=(ADVICE, DRESSING),
)
GERIATRICS = Profile(
    "gériatrie",
    WINTER,
    alos=8.6,
    occupancy=0.90,
    medical_roots=("01M21", "04M05", "08M28", "11M04", "23M20"),
    severity=(0.14, 0.34, 0.38, 0.14),
    consultations=1.5,
)
PNEUMOLOGY = Profile(
    "pneumologie",
    WINTER,
    alos=6.4,
    occupancy=0.87,
    medical_roots=("04M05", "04M08", "04M13", "04M20"),
    consultations=3,
    acts=5,
    act_codes=(SPIROMETRY, SPIROMETRY, ADVICE),
)
GASTRO = Profile(
    "hépato-gastro-entérologie",
    WINTER,
    alos=6.1,
    occupancy=0.86,
    medical_roots=("06M04", "06M03", "07M06", "07M02"),
    consultations=3,
)
ENDOSCOPY = Profile(
    "endoscopies digestives",
    ambulatory=12,
    ambulatory_roots=("06K04", "06K02"),
    base_tariff=850.0,
    acts=8,
    act_codes=(GASTROSCOPY, COLONOSCOPY),
    titles=(0.60, 0.20, 0.12, 0.08),
)
DAY_HOSPITAL = Profile(
    "hôpital de jour de médecine",
    ambulatory=20,
    ambulatory_roots=("28Z07", "28Z17", "23K02"),
    base_tariff=650.0,
    titles=(0.60, 0.24, 0.10, 0.06),
)
ORTHOPAEDICS = Profile(
    "orthopédie-traumatologie",
    alos=5.0,
    occupancy=0.86,
    medical_roots=("08M28", "08M36"),
    surgical_roots=("08C48", "08C24", "08C47", "08C38"),
    surgical_share=0.85,
    severity=(0.55, 0.28, 0.13, 0.04),
    base_tariff=5600.0,
    consultations=5,
    acts=3,
    act_codes=(INFILTRATION, DRESSING),
    titles=(0.66, 0.16, 0.11, 0.07),
)
DIGESTIVE_SURGERY = Profile(
    "chirurgie digestive",
    alos=6.4,
    occupancy=0.85,
    medical_roots=("06M03", "06M04"),
    surgical_roots=("06C04", "06C09", "06C12", "07C14"),
    surgical_share=0.82,
    severity=(0.45, 0.31, 0.18, 0.06),
    base_tariff=5900.0,
    consultations=3,
    titles=(0.66, 0.16, 0.11, 0.07),
)
UROLOGY = Profile(
    "urologie",
    alos=3.6,
    occupancy=0.84,
    medical_roots=("11M04", "11M06"),
    surgical_roots=("11C02", "12C11", "11C13"),
    surgical_share=0.85,
    severity=(0.58, 0.27, 0.12, 0.03),
    base_tariff=4800.0,
    consultations=3,
    acts=3,
    act_codes=(CYSTOSCOPY,),
    titles=(0.66, 0.16, 0.11, 0.07),
)
GENERAL_SURGERY = Profile(
    "chirurgie viscérale et orthopédique",
    alos=4.9,
    occupancy=0.84,
    medical_roots=("06M03", "08M28"),
    surgical_roots=("06C09", "06C12", "07C14", "08C48", "08C24"),
    surgical_share=0.84,
    severity=(0.52, 0.30, 0.14, 0.04),
    base_tariff=5400.0,
    consultations=3,
    acts=1,
    act_codes=(INFILTRATION, DRESSING),
    titles=(0.66, 0.16, 0.11, 0.07),
)
OUTPATIENT_SURGERY = Profile(
    "chirurgie ambulatoire",
    ambulatory=34,
    ambulatory_roots=("06C12", "07C14", "08C44", "02C05", "11C13", "09C11"),
    base_tariff=1400.0,
    titles=(0.62, 0.19, 0.12, 0.07),
)
MATERNITY = Profile(
    "obstétrique",
    BIRTHS,
    alos=4.2,
    occupancy=0.80,
    medical_roots=("14Z14", "14Z13", "14M02"),
    surgical_roots=("14C08",),
    surgical_share=0.20,
    severity=(0.70, 0.22, 0.07, 0.01),
    discharge_week=CONTINUOUS,
    base_tariff=2700.0,
    consultations=4,
    acts=3,
    act_codes=(PELVIC_ECHO,),
)
GYNAECOLOGY = Profile(
    "gynécologie",
    alos=3.0,
    occupancy=0.82,
    medical_roots=("13M03",),
    surgical_roots=("13C03", "13C14", "13C08"),
    surgical_share=0.80,
    severity=(0.66, 0.24, 0.08, 0.02),
    base_tariff=4200.0,
    consultations=3,
    acts=2,
    act_codes=(PELVIC_ECHO,),
    titles=(0.66, 0.16, 0.11, 0.07),
)
PAEDIATRICS = Profile(
    "pédiatrie",
    CHILDREN,
    alos=3.4,
    occupancy=0.84,
    medical_roots=("04M18", "06M03", "04M05", "23M20"),
    severity=(0.62, 0.27, 0.09, 0.02),
    base_tariff=2600.0,
    consultations=3,
)
NEONATOLOGY = Profile(
    "néonatologie",
    BIRTHS,
    alos=9.5,
    occupancy=0.86,
    medical_roots=("15M05", "15M06"),
    severity=(0.30, 0.30, 0.25, 0.15),
    discharge_week=CONTINUOUS,
    base_tariff=3500.0,
    daily_supplement=520.0,
)
SHORT_STAY = Profile(
    "unité d'hospitalisation de courte durée",
    ACUTE,
    alos=1.2,
    occupancy=0.90,
    medical_roots=("23M20", "19M06", "01M21", "06M03", "05M04"),
    severity=(0.60, 0.30, 0.08, 0.02),
    discharge_week=CONTINUOUS,
    base_tariff=1100.0,
)
INTENSIVE_CARE = Profile(
    "réanimation",
    ACUTE,
    alos=8.5,
    occupancy=0.88,
    medical_roots=("04M24", "05M09", "18M10", "01M30"),
    severity=(0.03, 0.12, 0.40, 0.45),
    discharge_week=CONTINUOUS,
    base_tariff=4800.0,
    daily_supplement=880.0,
    titles=(0.72, 0.14, 0.09, 0.05),
)
CONTINUOUS_CARE = Profile(
    "surveillance continue",
    ACUTE,
    alos=4.5,
    occupancy=0.86,
    medical_roots=("04M05", "05M09", "06M04", "01M30"),
    severity=(0.08, 0.27, 0.42, 0.23),
    discharge_week=CONTINUOUS,
    base_tariff=4000.0,
    daily_supplement=360.0,
    titles=(0.72, 0.14, 0.09, 0.05),
)
CARDIOLOGY = Profile(
    "cardiologie",
    ACUTE,
    alos=5.2,
    occupancy=0.89,
    medical_roots=("05M09", "05M04", "05M08", "05M07"),
    consultations=4,
    acts=8,
    act_codes=(ECG, ECG, ECHO_HEART, HOLTER),
)
CARDIAC_INTENSIVE_CARE = Profile(
    "soins intensifs de cardiologie",
    ACUTE,
    alos=4.1,
    occupancy=0.88,
    medical_roots=("05M04", "05M09", "05K06"),
    severity=(0.10, 0.30, 0.38, 0.22),
    discharge_week=CONTINUOUS,
    base_tariff=4200.0,
    daily_supplement=420.0,
)
INTERVENTIONAL_CARDIOLOGY = Profile(
    "cardiologie interventionnelle",
    ambulatory=9,
    ambulatory_roots=("05K06", "05K10", "05K14"),
    base_tariff=2300.0,
    titles=(0.58, 0.25, 0.09, 0.08),
)
CARDIAC_SURGERY = Profile(
    "chirurgie cardiaque et vasculaire",
    alos=9.0,
    occupancy=0.86,
    medical_roots=("05M09",),
    surgical_roots=("05C02", "05C04", "05C13", "05C19"),
    surgical_share=0.90,
    severity=(0.20, 0.32, 0.32, 0.16),
    base_tariff=9800.0,
    consultations=2,
    titles=(0.64, 0.19, 0.10, 0.07),
)
NEUROLOGY = Profile(
    "neurologie",
    ACUTE,
    alos=7.2,
    occupancy=0.87,
    medical_roots=("01M30", "01M21", "01M13", "01M20"),
    consultations=4,
    acts=4,
    act_codes=(EEG, EMG),
)
STROKE_UNIT = Profile(
    "unité neuro-vasculaire",
    ACUTE,
    alos=6.6,
    occupancy=0.90,
    medical_roots=("01M30", "01M31", "01K04"),
    severity=(0.16, 0.34, 0.34, 0.16),
    discharge_week=CONTINUOUS,
    daily_supplement=300.0,
)
NEUROSURGERY = Profile(
    "neurochirurgie",
    alos=7.4,
    occupancy=0.85,
    medical_roots=("01M21",),
    surgical_roots=("01C04", "01C05", "08C52"),
    surgical_share=0.80,
    severity=(0.32, 0.30, 0.25, 0.13),
    base_tariff=7600.0,
    consultations=3,
    titles=(0.66, 0.16, 0.11, 0.07),
)
SCANNER = Profile(
    "scanographie",
    imaging=20,
    imaging_week=(1.0, 1.0, 1.0, 1.0, 1.0, 0.35, 0.30),
    imaging_codes=CT,
    external_share=0.40,
    titles=(0.48, 0.12, 0.18, 0.22),
)
MRI_UNIT = Profile(
    "imagerie par résonance magnétique",
    imaging=13,
    imaging_week=(1.0, 1.0, 1.0, 1.0, 1.0, 0.12, 0.05),
    imaging_codes=MRI,
    external_share=0.55,
    titles=(0.46, 0.12, 0.18, 0.24),
)
RADIOLOGY = Profile(
    "radiologie conventionnelle et échographie",
    imaging=24,
    imaging_week=(1.0, 1.0, 1.0, 1.0, 1.0, 0.30, 0.25),
    imaging_codes=XRAY,
    external_share=0.45,
    titles=(0.58, 0.10, 0.16, 0.16),
)
NUCLEAR_MEDICINE = Profile(
    "médecine nucléaire",
    imaging=5,
    imaging_codes=NUCLEAR,
    external_share=0.65,
    titles=(0.42, 0.30, 0.12, 0.16),
)
GENERAL_IMAGING = Profile(
    "imagerie médicale",
    imaging=11,
    imaging_week=(1.0, 1.0, 1.0, 1.0, 1.0, 0.35, 0.30),
    imaging_codes=(*CT, *XRAY, *XRAY),
    external_share=0.40,
    titles=(0.52, 0.12, 0.16, 0.20),
)
PHARMACY = Profile(
    "pharmacie à usage intérieur",
    titles=(0.22, 0.70, 0.05, 0.03),
    other_revenue=0.22,
)
LABORATORY = Profile(
    "biologie médicale",
    titles=(0.52, 0.30, 0.11, 0.07),
    other_revenue=0.30,
)

SEVERITY_LOS = (0.55, 0.9, 1.45, 2.3)
"""Length of stay of each severity level, relative to the others."""
SEVERITY_TARIFF = (0.75, 1.0, 1.6, 2.6)


# --------------------------------------------------------------------------------------------
# The territory
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitSpec:
    uf: str
    name: str
    profile: Profile
    beds: int | None = None
    scale: float = 1.0
    """Multiplies the profile's per-weekday rates (consultations, acts, imaging, ambulatory)."""
    budget: float = 0.0
    """Monthly expenses (EUR) of a unit without activity of its own (pharmacy, lab)."""


@dataclass(frozen=True)
class DepartmentSpec:
    code: str
    name: str
    units: tuple[UnitSpec, ...]


@dataclass(frozen=True)
class PoleSpec:
    code: str
    name: str
    departments: tuple[DepartmentSpec, ...]


@dataclass(frozen=True)
class EstablishmentSpec:
    finess: str
    name: str
    client_id: str
    prefix: str
    """Of its org-unit codes (``CHU-IMG``) and of its records' ids (``PMSI-CHU-...``)."""
    poles: tuple[PoleSpec, ...]
    coding_delay: float
    """Median days between an outpatient act and its coding."""
    uncoded: float
    """Share of the outpatient acts never coded."""
    coverage: float
    """Revenue over expenses the establishment's budget aims at."""

    @property
    def source_suffix(self) -> str:
        return self.client_id.removeprefix("si-")

    def org_code(self, local: str) -> str:
        return f"{self.prefix}-{local}"

    def units(self) -> Iterator[tuple[PoleSpec, DepartmentSpec, UnitSpec]]:
        for pole in self.poles:
            for department in pole.departments:
                for unit in department.units:
                    yield pole, department, unit


def _dept(code: str, name: str, *units: UnitSpec) -> DepartmentSpec:
    return DepartmentSpec(code, name, units)


def _pole(code: str, name: str, *departments: DepartmentSpec) -> PoleSpec:
    return PoleSpec(code, name, departments)


_NAMES = {e.finess: e for e in demo.ESTABLISHMENTS}
_CHU, _NORD, _MONTS, _LAC = (e.finess for e in demo.ESTABLISHMENTS)

ESTABLISHMENTS: tuple[EstablishmentSpec, ...] = (
    EstablishmentSpec(
        _CHU,
        _NAMES[_CHU].name,
        _NAMES[_CHU].client_id,
        "CHU",
        (
            _pole(
                "IMG",
                "Pôle imagerie médicale",
                _dept(
                    "RAD",
                    "Radiologie et imagerie diagnostique",
                    UnitSpec("1101", "Scanographie", SCANNER),
                    UnitSpec("1102", "IRM", MRI_UNIT),
                    UnitSpec("1103", "Radiologie conventionnelle et échographie", RADIOLOGY),
                ),
                _dept(
                    "NUC",
                    "Médecine nucléaire",
                    UnitSpec("1201", "Scintigraphie et TEP", NUCLEAR_MEDICINE),
                ),
            ),
            _pole(
                "MED",
                "Pôle médecine",
                _dept(
                    "MIN",
                    "Médecine interne",
                    UnitSpec("2101", "Médecine interne", MEDICINE, beds=30),
                    UnitSpec("2102", "Hôpital de jour de médecine", DAY_HOSPITAL),
                ),
                _dept("GER", "Gériatrie", UnitSpec("2201", "Gériatrie aiguë", GERIATRICS, 28)),
                _dept("PNE", "Pneumologie", UnitSpec("2301", "Pneumologie", PNEUMOLOGY, 26)),
                _dept(
                    "HGE",
                    "Hépato-gastro-entérologie",
                    UnitSpec("2401", "Hépato-gastro-entérologie", GASTRO, 24),
                    UnitSpec("2402", "Endoscopies digestives", ENDOSCOPY),
                ),
            ),
            _pole(
                "CHI",
                "Pôle chirurgie",
                _dept(
                    "ORT",
                    "Orthopédie-traumatologie",
                    UnitSpec("3101", "Orthopédie-traumatologie", ORTHOPAEDICS, 32),
                ),
                _dept(
                    "DIG",
                    "Chirurgie digestive",
                    UnitSpec("3201", "Chirurgie digestive", DIGESTIVE_SURGERY, 26),
                ),
                _dept("URO", "Urologie", UnitSpec("3301", "Urologie", UROLOGY, 18)),
                _dept(
                    "UCA",
                    "Chirurgie ambulatoire",
                    UnitSpec("3401", "Unité de chirurgie ambulatoire", OUTPATIENT_SURGERY),
                ),
                _dept("ANE", "Anesthésie et surveillance continue chirurgicale"),
            ),
            _pole(
                "FME",
                "Pôle femme-mère-enfant",
                _dept(
                    "OBS",
                    "Gynécologie-obstétrique",
                    UnitSpec("4101", "Maternité", MATERNITY, 30),
                    UnitSpec("4102", "Gynécologie", GYNAECOLOGY, 12),
                ),
                _dept(
                    "PED",
                    "Pédiatrie",
                    UnitSpec("4201", "Pédiatrie", PAEDIATRICS, 24),
                    UnitSpec("4202", "Néonatologie", NEONATOLOGY, 15),
                ),
            ),
            _pole(
                "URG",
                "Pôle urgences-réanimation",
                _dept(
                    "URG",
                    "Urgences",
                    UnitSpec("5101", "Unité d'hospitalisation de courte durée", SHORT_STAY, 10),
                ),
                _dept(
                    "REA",
                    "Réanimation",
                    UnitSpec("5201", "Réanimation polyvalente", INTENSIVE_CARE, 20),
                    UnitSpec("5202", "Unité de surveillance continue", CONTINUOUS_CARE, 12),
                ),
            ),
            _pole(
                "CAR",
                "Pôle cardio-vasculaire",
                _dept(
                    "CAR",
                    "Cardiologie",
                    UnitSpec("6101", "Cardiologie", CARDIOLOGY, 30),
                    UnitSpec("6102", "Soins intensifs de cardiologie", CARDIAC_INTENSIVE_CARE, 12),
                    UnitSpec("6103", "Cardiologie interventionnelle", INTERVENTIONAL_CARDIOLOGY),
                ),
                _dept(
                    "CCV",
                    "Chirurgie cardiaque et vasculaire",
                    UnitSpec("6201", "Chirurgie cardiaque et vasculaire", CARDIAC_SURGERY, 20),
                ),
            ),
            _pole(
                "NEU",
                "Pôle neurosciences",
                _dept(
                    "NEU",
                    "Neurologie",
                    UnitSpec("7101", "Neurologie", NEUROLOGY, 28),
                    UnitSpec("7102", "Unité neuro-vasculaire", STROKE_UNIT, 16),
                ),
                _dept(
                    "NCH", "Neurochirurgie", UnitSpec("7201", "Neurochirurgie", NEUROSURGERY, 22)
                ),
            ),
            _pole(
                "PHB",
                "Pôle pharmacie-biologie",
                _dept(
                    "PHA",
                    "Pharmacie",
                    UnitSpec("8101", "Pharmacie à usage intérieur", PHARMACY, budget=620_000),
                ),
                _dept(
                    "BIO",
                    "Biologie médicale",
                    UnitSpec(
                        "8201", "Laboratoire de biologie médicale", LABORATORY, budget=540_000
                    ),
                ),
            ),
        ),
        coding_delay=5.0,
        uncoded=0.035,
        coverage=1.05,
    ),
    EstablishmentSpec(
        _NORD,
        _NAMES[_NORD].name,
        _NAMES[_NORD].client_id,
        "NORD",
        (
            _pole(
                "MED",
                "Pôle médecine",
                _dept(
                    "POL",
                    "Médecine polyvalente",
                    UnitSpec("2101", "Médecine polyvalente", MEDICINE, 30),
                    UnitSpec("2102", "Hôpital de jour de médecine", DAY_HOSPITAL, scale=0.45),
                ),
                _dept(
                    "GER", "Gériatrie", UnitSpec("2201", "Court séjour gériatrique", GERIATRICS, 24)
                ),
                _dept(
                    "CAR", "Cardiologie", UnitSpec("2301", "Cardiologie", CARDIOLOGY, 18, scale=0.5)
                ),
            ),
            _pole(
                "CHI",
                "Pôle chirurgie",
                _dept(
                    "VIS",
                    "Chirurgie viscérale et orthopédique",
                    UnitSpec("3101", "Chirurgie", GENERAL_SURGERY, 28),
                ),
                _dept(
                    "UCA",
                    "Chirurgie ambulatoire",
                    UnitSpec("3201", "Chirurgie ambulatoire", OUTPATIENT_SURGERY, scale=0.30),
                ),
            ),
            _pole(
                "FME",
                "Pôle femme-enfant",
                _dept("MAT", "Maternité", UnitSpec("4101", "Maternité", MATERNITY, 20, 0.6)),
                _dept("PED", "Pédiatrie", UnitSpec("4201", "Pédiatrie", PAEDIATRICS, 12, 0.6)),
            ),
            _pole(
                "URG",
                "Pôle urgences et médico-technique",
                _dept(
                    "URG",
                    "Urgences",
                    UnitSpec("5101", "Unité d'hospitalisation de courte durée", SHORT_STAY, 8),
                ),
                _dept("IMG", "Imagerie", UnitSpec("5201", "Imagerie médicale", GENERAL_IMAGING)),
            ),
        ),
        coding_delay=4.0,
        uncoded=0.03,
        coverage=1.02,
    ),
    EstablishmentSpec(
        _MONTS,
        _NAMES[_MONTS].name,
        _NAMES[_MONTS].client_id,
        "MONTS",
        (
            _pole(
                "MED",
                "Pôle médecine-gériatrie",
                _dept("POL", "Médecine", UnitSpec("2101", "Médecine", MEDICINE, 26, 0.6)),
                _dept(
                    "GER",
                    "Gériatrie",
                    UnitSpec("2201", "Court séjour gériatrique", GERIATRICS, 22),
                    UnitSpec("2202", "Hôpital de jour gériatrique", DAY_HOSPITAL, scale=0.25),
                ),
            ),
            _pole(
                "CHI",
                "Pôle chirurgie",
                _dept(
                    "CHI",
                    "Chirurgie",
                    UnitSpec("3101", "Chirurgie", GENERAL_SURGERY, 18, 0.6),
                    UnitSpec("3102", "Chirurgie ambulatoire", OUTPATIENT_SURGERY, scale=0.2),
                ),
            ),
            _pole(
                "URG",
                "Pôle urgences et médico-technique",
                _dept(
                    "URG",
                    "Urgences",
                    UnitSpec("5101", "Unité d'hospitalisation de courte durée", SHORT_STAY, 6),
                ),
                _dept(
                    "IMG",
                    "Imagerie",
                    UnitSpec("5201", "Imagerie médicale", GENERAL_IMAGING, scale=0.7),
                ),
            ),
        ),
        coding_delay=7.0,
        uncoded=0.05,
        coverage=0.98,
    ),
    EstablishmentSpec(
        _LAC,
        _NAMES[_LAC].name,
        _NAMES[_LAC].client_id,
        "LAC",
        (
            _pole(
                "MED",
                "Pôle médecine",
                _dept(
                    "POL",
                    "Médecine polyvalente",
                    UnitSpec("2101", "Médecine polyvalente", MEDICINE, 28),
                ),
                _dept("PNE", "Pneumologie", UnitSpec("2201", "Pneumologie", PNEUMOLOGY, 16, 0.6)),
                _dept(
                    "GER", "Gériatrie", UnitSpec("2301", "Court séjour gériatrique", GERIATRICS, 20)
                ),
            ),
            _pole(
                "CHI",
                "Pôle chirurgie-anesthésie",
                _dept(
                    "ORT",
                    "Orthopédie",
                    UnitSpec("3101", "Orthopédie-traumatologie", ORTHOPAEDICS, 20, 0.6),
                ),
                _dept(
                    "UCA",
                    "Chirurgie ambulatoire",
                    UnitSpec("3201", "Chirurgie ambulatoire", OUTPATIENT_SURGERY, scale=0.25),
                ),
            ),
            _pole(
                "FME",
                "Pôle femme-enfant",
                _dept("MAT", "Maternité", UnitSpec("4101", "Maternité", MATERNITY, 18, 0.6)),
            ),
            _pole(
                "MT",
                "Pôle médico-technique",
                _dept("IMG", "Imagerie", UnitSpec("5101", "Imagerie médicale", GENERAL_IMAGING)),
                _dept(
                    "PHA",
                    "Pharmacie",
                    UnitSpec("5201", "Pharmacie à usage intérieur", PHARMACY, budget=110_000),
                ),
            ),
        ),
        coding_delay=3.0,
        uncoded=0.025,
        coverage=1.01,
    ),
)


def first_day(today: date) -> date:
    """January 1st two years before ``today``'s year: where the demo territory starts."""
    return date(today.year - 2, 1, 1)


@dataclass(frozen=True)
class Stories:
    """The dated changes the dashboards should show, relative to ``today``."""

    this_year: date
    move_day: date
    mri_factor: float = 1.55
    cardiology_beds: tuple[int, int] = (30, 27)
    coding_median_delay: float = 13.0
    coding_uncoded: float = 0.16
    ambulatory_surgery_growth: float = 0.07
    full_surgery_growth: float = -0.03
    frailer_severity: tuple[float, float, float, float] = (0.07, 0.25, 0.44, 0.24)
    """The severity mix of the geriatrics' full stays this year (the case-mix shift)."""

    @classmethod
    def of(cls, today: date) -> Stories:
        return cls(this_year=date(today.year, 1, 1), move_day=date(today.year - 1, 7, 1))


MRI_UNIT_CODE = "CHU-UF1102"
CARDIOLOGY_UNIT_CODE = "CHU-UF6101"
CODING_DROP_UNIT_CODE = "CHU-UF1103"
MOVED_UNIT_CODE = "CHU-UF5202"
CASE_MIX_UNIT_CODE = "CHU-UF2201"
MOVED_TO = "CHU-CHI-ANE"


def unit_code(establishment: EstablishmentSpec, unit: UnitSpec) -> str:
    return establishment.org_code(f"UF{unit.uf}")


# --------------------------------------------------------------------------------------------
# Referential
# --------------------------------------------------------------------------------------------


def generate_referential(today: date) -> list[dict[str, Any]]:
    """The org units as ``PUT /org-units/{code}`` bodies plus their ``code``, parents first.

    A code appears again, later in the list, when it changes on a later date (a unit
    moving to another pôle, a ward closing beds): send them in order.
    """
    since = first_day(today).isoformat()
    stories = Stories.of(today)
    nodes: list[dict[str, Any]] = [
        {"code": TERRITORY, "kind": "territory", "name": "GHT G4", "valid_from": since}
    ]
    later: list[dict[str, Any]] = []
    for establishment in ESTABLISHMENTS:
        nodes.append(
            {
                "code": establishment.finess,
                "kind": "establishment",
                "name": establishment.name,
                "parent": TERRITORY,
                "valid_from": since,
            }
        )
        for pole in establishment.poles:
            pole_code = establishment.org_code(pole.code)
            nodes.append(
                {
                    "code": pole_code,
                    "kind": "pole",
                    "name": pole.name,
                    "parent": establishment.finess,
                    "valid_from": since,
                }
            )
            for department in pole.departments:
                department_code = establishment.org_code(f"{pole.code}-{department.code}")
                nodes.append(
                    {
                        "code": department_code,
                        "kind": "department",
                        "name": department.name,
                        "parent": pole_code,
                        "valid_from": since,
                    }
                )
                for unit in department.units:
                    node: dict[str, Any] = {
                        "code": unit_code(establishment, unit),
                        "kind": "unit",
                        "name": unit.name,
                        "parent": department_code,
                        "valid_from": since,
                        "uf": unit.uf,
                        "specialty": unit.profile.specialty,
                    }
                    if unit.beds is not None:
                        node["installed_beds"] = unit.beds
                    nodes.append(node)
                    later.extend(_changes_of(node, stories))
    later.sort(key=itemgetter("valid_from"))
    return nodes + later


def _changes_of(node: Mapping[str, Any], stories: Stories) -> list[dict[str, Any]]:
    if node["code"] == MOVED_UNIT_CODE:
        return [{**node, "parent": MOVED_TO, "valid_from": stories.move_day.isoformat()}]
    if node["code"] == CARDIOLOGY_UNIT_CODE:
        closed = {"valid_from": stories.this_year.isoformat()}
        return [{**node, **closed, "installed_beds": stories.cardiology_beds[1]}]
    return []


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    day: date
    iso: str
    weekday: int
    """0 Monday ... 6 Sunday; 6 as well on a public holiday."""
    month: int
    """0 January ... 11 December: the index into a :data:`Season`."""
    years: float
    """Years since the first day (the trends' clock)."""
    week: int
    """Weeks since the first day."""


@dataclass
class _Sources:
    """Sequential pseudonymous ids per sending system and year, like real systems give."""

    prefix: str
    counters: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))

    def next_id(self, system: str, year: int) -> str:
        self.counters[system, year] += 1
        return f"{system}-{self.prefix}-{year}-{self.counters[system, year]:06d}"


SYSTEMS = {
    "stay": ("pmsi", "PMSI"),
    "outpatient_act": ("actes", "ACT"),
    "imaging_exam": ("ris", "RIS"),
    "consultation": ("consult", "CS"),
    "expense": ("gef", "GEF"),
    "revenue": ("gef", "GEF"),
}
"""Per kind: the sending system (``source`` is ``<system>-<establishment>``) and id prefix."""

EXPENSE_ACCOUNTS: dict[int, tuple[tuple[str, float], ...]] = {
    1: (("6411", 0.52), ("6421", 0.30), ("6451", 0.18)),
    2: (("60211", 0.55), ("60221", 0.45)),
    3: (("6063", 0.40), ("6152", 0.35), ("6282", 0.25)),
    4: (("68112", 0.85), ("66111", 0.15)),
}
REVENUE_ACCOUNTS = {1: "73111", 2: "7321", 3: "7088"}


def _days(today: date) -> list[Day]:
    start, end = first_day(today), today - timedelta(days=1)
    holidays: set[date] = set()
    for year in range(start.year, today.year + 1):
        holidays |= french_holidays(year)
    days: list[Day] = []
    day = start
    while day <= end:
        weekday = 6 if day in holidays else day.weekday()
        years = (day - start).days / 365.25
        days.append(Day(day, day.isoformat(), weekday, day.month - 1, years, len(days) // 7))
        day += timedelta(days=1)
    return days


class _Flow:
    """Daily counts of one flow: its expected rate, with a week-to-week wobble.

    The counts carry their fractions from day to day instead of being drawn from a
    Poisson law: a month's count stays within a few percent of its expected value, so
    a planned rise or fall of 8 % shows on any month of the year, while the weekly
    noise (6 %) keeps the curves from looking machine-made.
    """

    WEEKLY_NOISE = 0.06

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.carry = rng.random()
        self.week = -1
        self.noise = 1.0

    def count(self, day: Day, rate: float) -> int:
        if day.week != self.week:
            self.week, self.noise = day.week, self.rng.gauss(1.0, self.WEEKLY_NOISE)
        self.carry += max(rate * self.noise, 0.0)
        count = int(self.carry)
        self.carry -= count
        return count


def _timestamp(day: date, hour: int, minute: int) -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00{paris_offset(day, hour)}"


@dataclass
class _UnitContext:
    establishment: EstablishmentSpec
    unit: UnitSpec
    code: str
    rng: random.Random
    sources: _Sources
    stories: Stories
    last_day: date
    valuation: dict[tuple[int, int], float] = field(default_factory=lambda: defaultdict(float))

    def record(self, kind: str, year: int, **fields: Any) -> Record:
        system, prefix = SYSTEMS[kind]
        return {
            "kind": kind,
            "source": f"{system}-{self.establishment.source_suffix}",
            "source_id": self.sources.next_id(prefix, year),
            "finess": self.establishment.finess,
            "unit": self.unit.uf,
            **fields,
        }


def generate_records(today: date) -> Iterator[Record]:
    """Every record from January 1st two years ago to yesterday, establishment by establishment."""
    days = _days(today)
    stories = Stories.of(today)
    for establishment in ESTABLISHMENTS:
        sources = _Sources(establishment.prefix)
        for *_, unit in establishment.units():
            code = unit_code(establishment, unit)
            context = _UnitContext(
                establishment,
                unit,
                code,
                random.Random(f"{SEED}:{today.year}:{code}"),
                sources,
                stories,
                today - timedelta(days=1),
            )
            records = _activity(context, days)
            yield from records
            yield from _finance(context, days)


def _activity(context: _UnitContext, days: list[Day]) -> list[Record]:
    profile = context.unit.profile
    records: list[Record] = []
    if profile.alos:
        records += _full_stays(context, days)
    if profile.ambulatory:
        records += _ambulatory_stays(context, days)
    if profile.consultations:
        records += _consultations(context, days)
    if profile.acts:
        records += _acts(context, days)
    if profile.imaging:
        records += _imaging(context, days)
    return records


def _beds(context: _UnitContext, day: date) -> int:
    if context.code == CARDIOLOGY_UNIT_CODE and day >= context.stories.this_year:
        return context.stories.cardiology_beds[1]
    assert context.unit.beds is not None
    return context.unit.beds


def _full_stays(context: _UnitContext, days: list[Day]) -> list[Record]:
    profile, rng, stories = context.unit.profile, context.rng, context.stories
    week_mean = sum(profile.discharge_week[:7]) / 7
    severity_weights = profile.severity
    los_mean = sum(w * f for w, f in zip(severity_weights, SEVERITY_LOS, strict=True))
    tariff_mean = sum(w * f for w, f in zip(severity_weights, SEVERITY_TARIFF, strict=True))
    mixes = {False: (list(accumulate(severity_weights)), 1.0)}
    if context.code == CASE_MIX_UNIT_CODE:
        frailer = stories.frailer_severity
        longer = sum(w * f for w, f in zip(frailer, SEVERITY_LOS, strict=True)) / los_mean
        mixes[True] = (list(accumulate(frailer)), longer)
    levels = (1, 2, 3, 4)
    start = days[0].day
    flow = _Flow(rng)
    out: list[Record] = []
    for d in days:
        # Longer stays of a frailer mix fill the same beds with fewer of them.
        cumulative, longer = mixes.get(d.day >= stories.this_year, mixes[False])
        surgical_trend = (1 + stories.full_surgery_growth) ** d.years
        trend = 1.012**d.years
        beds = _beds(context, d.day)
        lam = (
            beds
            * profile.occupancy
            * profile.season[d.month]
            * profile.discharge_week[d.weekday]
            / week_mean
            * trend
            / (profile.alos * longer)
        )
        # Fewer full surgical stays as ambulatory surgery grows; medical ones unchanged.
        share = profile.surgical_share
        lam *= (1 - share) + share * surgical_trend
        surgical_share = share * surgical_trend / ((1 - share) + share * surgical_trend)
        for _ in range(flow.count(d, lam)):
            severity = rng.choices(levels, cum_weights=cumulative)[0]
            mean = profile.alos * SEVERITY_LOS[severity - 1] / los_mean
            los = 1 + int(rng.gammavariate(1.5, max(mean - 0.5, 0.01) / 1.5))
            elapsed = (d.day - start).days
            if los > elapsed:
                if elapsed < 1:
                    continue  # admitted before the territory existed
                los = rng.randint(1, elapsed)
            surgical = rng.random() < surgical_share
            root = rng.choice(profile.surgical_roots if surgical else profile.medical_roots)
            admitted = d.day - timedelta(days=los)
            if surgical:
                admitted_hour = rng.randint(7, 10)
            else:
                admitted_hour = rng.choice((0, 1, 4, 6, 8, 9, 10, 11, 12, 14, 15, 16, 18, 20, 22))
            discharged_hour = rng.randint(10, 17)
            amount = (
                profile.base_tariff
                * SEVERITY_TARIFF[severity - 1]
                / tariff_mean
                * rng.uniform(0.85, 1.2)
                + profile.daily_supplement * los
            )
            amount = round(amount, 2)
            context.valuation[d.day.year, d.day.month] += amount
            out.append(
                context.record(
                    "stay",
                    d.day.year,
                    admitted_at=_timestamp(admitted, admitted_hour, rng.randrange(0, 60, 5)),
                    discharged_at=_timestamp(d.day, discharged_hour, rng.randrange(0, 60, 5)),
                    drg=f"{root}{severity}",
                    severity=severity,
                    mode="full",
                    amount=amount,
                )
            )
    return out


def _ambulatory_stays(context: _UnitContext, days: list[Day]) -> list[Record]:
    profile, rng, stories = context.unit.profile, context.rng, context.stories
    flow = _Flow(rng)
    out: list[Record] = []
    rate = profile.ambulatory * context.unit.scale
    for d in days:
        weekday_factor = WEEKDAYS[d.weekday]
        if not weekday_factor:
            continue
        growth = stories.ambulatory_surgery_growth if profile.surgical else 0.015
        lam = rate * profile.season[d.month] * (1 + growth) ** d.years
        for _ in range(flow.count(d, lam)):
            root = rng.choice(profile.ambulatory_roots)
            suffix = "Z" if root[2] == "Z" else "J"
            admitted_hour = rng.randint(7, 10)
            discharged_hour = admitted_hour + rng.randint(3, 8)
            amount = round(profile.base_tariff * rng.uniform(0.7, 1.3), 2)
            context.valuation[d.day.year, d.day.month] += amount
            out.append(
                context.record(
                    "stay",
                    d.day.year,
                    admitted_at=_timestamp(d.day, admitted_hour, rng.randrange(0, 60, 5)),
                    discharged_at=_timestamp(d.day, discharged_hour, rng.randrange(0, 60, 5)),
                    drg=f"{root}{suffix}",
                    mode="ambulatory",
                    amount=amount,
                )
            )
    return out


def _consultations(context: _UnitContext, days: list[Day]) -> list[Record]:
    profile, rng = context.unit.profile, context.rng
    rate = profile.consultations * context.unit.scale
    codes = [c for c, _, _ in CONSULTATION_CODES]
    weights = [w for _, _, w in CONSULTATION_CODES]
    prices = {c: p for c, p, _ in CONSULTATION_CODES}
    flow = _Flow(rng)
    out: list[Record] = []
    for d in days:
        if not WEEKDAYS[d.weekday]:
            continue
        lam = rate * SCHEDULED[d.month] * 1.015**d.years
        for _ in range(flow.count(d, lam)):
            code = rng.choices(codes, weights)[0]
            context.valuation[d.day.year, d.day.month] += prices[code]
            out.append(
                context.record(
                    "consultation", d.day.year, date=d.iso, code=code, amount=prices[code]
                )
            )
    return out


def _coding(context: _UnitContext, day: date) -> tuple[float, float]:
    """(median coding delay in days, share never coded) of the unit's acts of ``day``."""
    establishment, stories = context.establishment, context.stories
    if context.code == CODING_DROP_UNIT_CODE and day >= stories.this_year:
        return stories.coding_median_delay, stories.coding_uncoded
    return establishment.coding_delay, establishment.uncoded


def _act(context: _UnitContext, day: date, code: str, system: str, amount: float) -> Record:
    rng = context.rng
    median, uncoded = _coding(context, day)
    fields: dict[str, Any] = {"date": day.isoformat(), "code": code, "code_system": system}
    coded_on = None
    if rng.random() >= uncoded:
        delay = int(rng.lognormvariate(math.log(median + 0.5), 0.85))
        candidate = day + timedelta(days=delay)
        if candidate <= context.last_day:
            coded_on = candidate
    fields["coded"] = coded_on is not None
    if coded_on is not None:
        fields["coded_on"] = coded_on.isoformat()
    fields["amount"] = amount
    return context.record("outpatient_act", day.year, **fields)


def _acts(context: _UnitContext, days: list[Day]) -> list[Record]:
    profile, rng = context.unit.profile, context.rng
    rate = profile.acts * context.unit.scale
    flow = _Flow(rng)
    out: list[Record] = []
    for d in days:
        if not WEEKDAYS[d.weekday]:
            continue
        lam = rate * SCHEDULED[d.month] * 1.02**d.years
        for _ in range(flow.count(d, lam)):
            code, system, amount = rng.choice(profile.act_codes)
            context.valuation[d.day.year, d.day.month] += amount
            out.append(_act(context, d.day, code, system, amount))
    return out


def _imaging(context: _UnitContext, days: list[Day]) -> list[Record]:
    profile, rng, stories = context.unit.profile, context.rng, context.stories
    rate = profile.imaging * context.unit.scale
    flow = _Flow(rng)
    out: list[Record] = []
    for d in days:
        factor = profile.imaging_week[d.weekday]
        if not factor:
            continue
        lam = rate * factor * SCHEDULED[d.month] * 1.015**d.years
        if context.code == MRI_UNIT_CODE and d.day >= stories.this_year:
            lam *= stories.mri_factor
        for _ in range(flow.count(d, lam)):
            code, price = rng.choice(profile.imaging_codes)
            amount = round(price * rng.uniform(0.95, 1.05), 2)
            context.valuation[d.day.year, d.day.month] += amount
            out.append(
                context.record("imaging_exam", d.day.year, date=d.iso, code=code, amount=amount)
            )
            if factor == 1.0 and rng.random() < profile.external_share:
                out.append(_act(context, d.day, code, "CCAM", amount))
    return out


def _month_ends(days: list[Day]) -> list[date]:
    """The last day of every complete month: expenses and revenue are booked then."""
    return [d.day for d in days if (d.day + timedelta(days=1)).day == 1]


STAFF_SEASON = _season(1.0, 1.0, 1.0, 1.0, 1.0, 1.01, 1.05, 1.06, 1.0, 1.0, 1.0, 1.02)
"""Title 1: summer replacements and the December bonus."""


def _finance(context: _UnitContext, days: list[Day]) -> list[Record]:
    unit, rng, stories = context.unit, context.rng, context.stories
    profile, establishment = unit.profile, context.establishment
    month_ends = _month_ends(days)
    if not month_ends:
        return []
    first_year = month_ends[0].year
    baseline = [context.valuation[e.year, e.month] for e in month_ends if e.year == first_year]
    mean_valuation = sum(baseline) / len(baseline)
    if unit.budget or not mean_valuation:
        base_cost = unit.budget
    else:
        # Revenue is about 1.11 x the valuation (titles 1 to 3): aim at the coverage.
        base_cost = mean_valuation * 1.11 / establishment.coverage * rng.uniform(0.95, 1.05)
    out: list[Record] = []
    for end in month_ends:
        years = (end - month_ends[0]).days / 365.25
        cost = base_cost * 1.022**years
        valuation = context.valuation[end.year, end.month]
        activity = valuation / mean_valuation if mean_valuation else 1.0
        by_title = {
            1: cost * profile.titles[0] * STAFF_SEASON[end.month - 1] * rng.uniform(0.98, 1.02),
            2: cost * profile.titles[1] * activity * rng.uniform(0.94, 1.06),
            3: cost * profile.titles[2] * rng.uniform(0.9, 1.1),
            4: cost * profile.titles[3] * rng.uniform(0.99, 1.01),
        }
        if context.code == MRI_UNIT_CODE and end >= stories.this_year:
            by_title[4] *= 1.6  # depreciation of the second MRI scanner
        for title, amount in by_title.items():
            for account, share in EXPENSE_ACCOUNTS[title]:
                out.append(
                    context.record(
                        "expense",
                        end.year,
                        date=end.isoformat(),
                        budget_title=title,
                        account=account,
                        amount=round(amount * share, 2),
                    )
                )
        revenue = {
            1: valuation * rng.uniform(0.99, 1.01),
            2: valuation * 0.075 + cost * profile.other_revenue,
            3: cost * 0.035 * rng.uniform(0.8, 1.2),
        }
        for title, amount in revenue.items():
            if amount > 0:
                out.append(
                    context.record(
                        "revenue",
                        end.year,
                        date=end.isoformat(),
                        budget_title=title,
                        account=REVENUE_ACCOUNTS[title],
                        amount=round(amount, 2),
                    )
                )
    return out


# --------------------------------------------------------------------------------------------
# Loading through the gateway
# --------------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "kind",
    "source",
    "source_id",
    "finess",
    "unit",
    "date",
    "admitted_at",
    "discharged_at",
    "drg",
    "severity",
    "mode",
    "code",
    "code_system",
    "coded",
    "coded_on",
    "budget_title",
    "account",
    "amount",
)
IMPORT_TIMEOUT_S = 300.0
RETRIES = 5
PENDING_IMPORT = frozenset({"pending", "queued", "running", "processing"})


class DemoLoadError(Exception):
    """The demo data could not be loaded; the message says which request failed and why."""


def record_year(record: Mapping[str, Any]) -> int:
    """The year a record counts in: its discharge year for a stay, its date's otherwise."""
    when = record["discharged_at"] if record["kind"] == "stay" else record["date"]
    return int(when[:4])


class _CsvFile:
    """A gzip-compressed CSV file written in memory, header first."""

    def __init__(self) -> None:
        self.raw = io.BytesIO()
        self.compressed = gzip.GzipFile(fileobj=self.raw, mode="wb", compresslevel=5, mtime=0)
        self.text = io.TextIOWrapper(self.compressed, encoding="utf-8", newline="")
        self.writer = csv.writer(self.text, lineterminator="\n")
        self.writer.writerow(CSV_COLUMNS)
        self.rows = 0

    def write(self, record: Mapping[str, Any]) -> None:
        self.writer.writerow([_cell(record.get(column)) for column in CSV_COLUMNS])
        self.rows += 1

    def close(self) -> bytes:
        self.text.flush()
        self.text.detach()
        self.compressed.close()
        return self.raw.getvalue()


def csv_files(records: Iterable[Record]) -> dict[int, tuple[bytes, int]]:
    """The records as one gzip-compressed CSV file per year: ``{year: (file, records)}``."""
    files: dict[int, _CsvFile] = {}
    for record in records:
        year = record_year(record)
        if year not in files:
            files[year] = _CsvFile()
        files[year].write(record)
    return {year: (file.close(), file.rows) for year, file in files.items()}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        parts = [str(body.get(k)) for k in ("title", "detail") if body.get(k)]
        extras = {k: v for k, v in body.items() if k not in ("type", "title", "detail", "status")}
        if extras:
            parts.append(str(extras)[:1000])
        return " - ".join(parts) or str(body)[:1000]
    return str(body)[:1000]


def _send(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send, waiting out rate limits (429) and brief unavailability (503); raise on non-2xx."""
    for attempt in range(RETRIES + 1):
        try:
            response = client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise DemoLoadError(f"{method} {url}: {error}") from error
        if response.status_code in (429, 503) and attempt < RETRIES:
            retry_after = response.headers.get("retry-after", "")
            time.sleep(float(retry_after) if retry_after.isdigit() else 0.5 * 2**attempt)
            continue
        if not response.is_success:
            raise DemoLoadError(f"{method} {url}: {response.status_code} {_problem(response)}")
        return response
    raise AssertionError("unreachable")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _token(client: httpx.Client, form: dict[str, str]) -> str:
    token: str = _send(client, "POST", "/auth/token", data=form).json()["access_token"]
    return token


def _items(body: Any) -> list[Any]:
    if isinstance(body, dict):
        items: list[Any] = body.get("items", [])
        return items
    return list(body)


def demo_password(env: Mapping[str, str] = os.environ) -> str:
    """The demo users' password and machine clients' secret, as the gateway reads it."""
    return env.get("GHT_DEMO_PASSWORD") or env.get("GATEWAY_DEMO_PASSWORD") or "demo"


def load_activity_demo(
    gateway_url: str,
    today: date,
    log: Callable[[str], None] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """Load the demo territory and its activity through the gateway, unless already there.

    The territory and its establishments are written by the ``admin`` user, each
    establishment's tree and records by its own system (``si-*``, client credentials).
    Raises :class:`DemoLoadError` on the first refused request, with the problem's detail.
    """
    say = log or (lambda line: print(line, flush=True))
    password = demo_password()
    timeout = httpx.Timeout(30.0, read=IMPORT_TIMEOUT_S, write=IMPORT_TIMEOUT_S)
    with httpx.Client(base_url=gateway_url, timeout=timeout, transport=transport) as client:
        admin = _bearer(
            _token(client, {"grant_type": "password", "username": "admin", "password": password})
        )
        present = _send(
            client,
            "GET",
            "/api/activity/org-units",
            params={"kind": "establishment"},
            headers=admin,
        )
        if _items(present.json()):
            say("demo activity: data present, nothing loaded")
            return
        started = time.monotonic()
        systems = {
            e.finess: _bearer(
                _token(
                    client,
                    {
                        "grant_type": "client_credentials",
                        "client_id": e.client_id,
                        "client_secret": password,
                    },
                )
            )
            for e in ESTABLISHMENTS
        }
        referential = generate_referential(today)
        _load_referential(client, referential, admin, systems)
        say(f"demo activity: {len(referential)} org-unit versions written")
        names = {e.finess: e.name for e in ESTABLISHMENTS}
        total = 0
        for finess, records in groupby(generate_records(today), key=itemgetter("finess")):
            began = time.monotonic()
            files = csv_files(records)
            count = 0
            for year, (payload, records_in_file) in sorted(files.items()):
                _import(client, systems[finess], f"demo-activity-{finess}-{year}.csv", payload)
                count += records_in_file
            total += count
            say(
                f"demo activity: {names[finess]} ({finess}): {count} records"
                f" in {len(files)} files, {time.monotonic() - began:.1f} s"
            )
        say(f"demo activity: {total} records loaded in {time.monotonic() - started:.1f} s")
        _write_comments(client, password, today)
        say(f"demo activity: {len(demo_comments(today))} comments written")


@dataclass(frozen=True)
class DemoComment:
    """What a demo person wrote of a figure: their explanation of a story."""

    username: str
    indicator: str
    org_unit: str
    period: date
    text: str


def demo_comments(today: date) -> list[DemoComment]:
    """The explanations of the stories, on the last complete month's figures."""
    month = date(today.year, today.month, 1) - timedelta(days=1)
    period = date(month.year, month.month, 1)
    return [
        DemoComment(
            "cadre.chu",
            "imaging_exams",
            "CHU-IMG",
            period,
            "Deuxième IRM ouverte en janvier (UF 1102) : les examens du pôle progressent de"
            " 10 à 13 % sur l'année, à effectif de manipulateurs constant.",
        ),
        DemoComment(
            "direction.chu",
            "stays_full",
            "CHU-CAR",
            period,
            "Fermeture de 3 des 30 lits de cardiologie (UF 6101) au 1er janvier : elle explique"
            " l'essentiel de la baisse des séjours du pôle.\nRéouverture à l'étude pour 2027.",
        ),
        DemoComment(
            "direction.chu",
            "stay_valuation",
            "CHU-UF2201",
            period,
            "Gériatrie aiguë : patients plus lourds (niveaux de sévérité 3 et 4 en hausse),"
            " séjours plus longs et mieux valorisés, moins nombreux.",
        ),
    ]


def _write_comments(client: httpx.Client, password: str, today: date) -> None:
    tokens: dict[str, dict[str, str]] = {}
    for comment in demo_comments(today):
        if comment.username not in tokens:
            form = {"grant_type": "password", "username": comment.username, "password": password}
            tokens[comment.username] = _bearer(_token(client, form))
        _send(
            client,
            "POST",
            f"/api/activity/indicators/{comment.indicator}/comments",
            json={
                "org_unit": comment.org_unit,
                "period": f"{comment.period:%Y-%m}",
                "text": comment.text,
            },
            headers=tokens[comment.username],
        )


def _load_referential(
    client: httpx.Client,
    referential: list[dict[str, Any]],
    admin: dict[str, str],
    systems: Mapping[str, dict[str, str]],
) -> None:
    finess_of: dict[str, str] = {}
    for node in referential:
        code, kind = node["code"], node["kind"]
        if kind == "territory":
            headers = admin
        elif kind == "establishment":
            finess_of[code] = code
            headers = admin
        else:
            finess_of[code] = finess_of[node["parent"]]
            headers = systems[finess_of[code]]
        body = {key: value for key, value in node.items() if key != "code"}
        _send(
            client,
            "PUT",
            f"/api/activity/org-units/{quote(code, safe='')}",
            json=body,
            headers=headers,
        )


def _import(client: httpx.Client, headers: dict[str, str], filename: str, payload: bytes) -> None:
    response = _send(
        client,
        "POST",
        "/api/activity/imports",
        params={"on_error": "reject_file", "filename": filename},
        content=payload,
        headers={**headers, "Content-Type": "text/csv", "Content-Encoding": "gzip"},
    )
    result = response.json()
    deadline = time.monotonic() + IMPORT_TIMEOUT_S
    while result.get("status") in PENDING_IMPORT and time.monotonic() < deadline:
        time.sleep(0.5)
        result = _send(
            client, "GET", f"/api/activity/imports/{result['id']}", headers=headers
        ).json()
    if result.get("rejected") or result.get("status") in PENDING_IMPORT | {"rejected", "failed"}:
        rejections = _send(
            client, "GET", f"/api/activity/imports/{result['id']}/rejections", headers=headers
        ).json()
        raise DemoLoadError(
            f"import of {filename} {result.get('status')}: {result.get('rejected')} rows"
            f" rejected; first: {_items(rejections)[:3]}"
        )


def main() -> int:
    """``python deploy/local/demo_activity.py [GATEWAY_URL]``: load the demo by hand."""
    gateway_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    try:
        load_activity_demo(gateway_url, date.today())
    except DemoLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
