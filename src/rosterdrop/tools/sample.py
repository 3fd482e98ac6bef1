"""Synthetic roster uploads for demos, tests and benchmarks (``rosterdrop sample``).

``write_sample`` builds one made-up district, the same for every layout, and
writes it as a flat ZIP of CSVs in the OneRoster 1.1, OneRoster 1.2 or Apple
School Manager layout (formats.md). The district follows the workload shapes
of performance.md: about 8 classes per student, 25 students per class, one
staff member per 14 students, one term per class.

How the district is built (all vectorised; no Python loop runs per person or
per enrollment):

* Schools are elementary (KG-05), middle (06-08) or high (09-12); one school
  alone is K-12. Students are spread over the schools by weight (high schools
  are bigger), then over the school's grades.
* A school has 8 subjects, one per period. In every period the students of a
  (school, grade) are shuffled and cut into sections of about 25: so each
  student is in exactly 8 classes of their school, one per subject, and meets
  different classmates in each.
* A course is (school, subject, grade); a class is one section of a course.
  Teachers take contiguous blocks of a school's classes (so they mostly teach
  one subject); about 10 % of classes get a second instructor, 1 % a third.
* People get names from built-in lists with accents and apostrophes, emails
  and usernames folded to ASCII; 2 % have no email and 0.1 % (at least one
  person) have an email with an apostrophe, which the validator reports as
  ``EMAIL_INVALID``. Everything else is valid, so validating a sample ends
  with ``EMAIL_MISSING``/``EMAIL_INVALID`` warnings only.

Output is byte-for-byte deterministic for (layout, students, seed), given the
same numpy and polars versions: a seeded numpy generator, fixed ZIP
timestamps and a fixed entry order. Large tables
are written in chunks of 250,000 rows straight into the ZIP entry, so memory
stays bounded: about 0.6 GiB peak and 15 s for 1,000,000 students.
"""

from __future__ import annotations

import contextlib
import os
import sys
import unicodedata
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal, get_args

import numpy as np
import numpy.typing as npt
import polars as pl

from rosterdrop.errors import InputError, UsageError
from rosterdrop.pipeline.headers import (
    ASM_HEADERS,
    CLASSES_HEADER,
    COURSES_HEADER,
    ENROLLMENTS_HEADER,
    MANIFEST_FILES,
    MANIFEST_HEADER,
    ORGS_HEADER,
    ROLES_HEADER,
    SESSIONS_HEADER,
    USERS_11_HEADER,
    USERS_12_HEADER,
)

Layout = Literal["oneroster-1.1", "oneroster-1.2", "asm"]
LAYOUTS: Final[tuple[Layout, ...]] = get_args(Layout)

IntArray = npt.NDArray[np.int64]

# --- shape of the district -----------------------------------------------------------

CLASS_SIZE: Final = 25
STUDENTS_PER_STAFF: Final = 14
SECOND_INSTRUCTOR_SHARE: Final = 0.10
THIRD_INSTRUCTOR_SHARE: Final = 0.01
MULTI_SCHOOL_STAFF_SHARE: Final = 0.01
MISSING_EMAIL_SHARE: Final = 0.02
APOSTROPHE_EMAIL_SHARE: Final = 0.001

# (students, schools) of the performance.md workloads; other sizes are
# interpolated on a log-log scale and extrapolated from the end segments.
_SCHOOL_POINTS: Final = ((2_000, 5), (25_000, 40), (100_000, 150), (1_000_000, 1_000))

GRADES: Final = ("KG", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12")
# school kind -> (label, first grade, last grade, relative size)
_SCHOOL_KINDS: Final = (
    ("Elementary School", 0, 5, 1.0),
    ("Middle School", 6, 8, 1.4),
    ("High School", 9, 12, 2.0),
    ("K-12 School", 0, 12, 1.0),
)
_KIND_CYCLE: Final = (0, 1, 2, 0, 0)  # E, M, H, E, E, E, M, H, ...

# One subject per period: (title, course code, class type).
SUBJECTS: Final = (
    ("Homeroom", "HR", "homeroom"),
    ("English Language Arts", "ELA", "scheduled"),
    ("Mathematics", "MATH", "scheduled"),
    ("Science", "SCI", "scheduled"),
    ("Social Studies", "SS", "scheduled"),
    ("Physical Education", "PE", "scheduled"),
    ("Visual & Performing Arts", "ARTS", "scheduled"),
    ("World Languages", "WL", "scheduled"),
)
CLASSES_PER_STUDENT: Final = len(SUBJECTS)  # one class per subject
_YEAR_LONG_SUBJECTS: Final = 5  # subjects before this index run all year, the others a semester

# academicSessions: (sourcedId, title, type, startDate, endDate, parentSourcedId)
SCHOOL_YEAR: Final = "2027"
SESSIONS: Final = (
    ("sy2026-27", "2026-2027", "schoolYear", "2026-08-01", "2027-07-01", ""),
    ("sy2026-27-s1", "Semester 1 2026-2027", "semester", "2026-08-01", "2027-01-19", "sy2026-27"),
    ("sy2026-27-s2", "Semester 2 2026-2027", "semester", "2027-01-19", "2027-07-01", "sy2026-27"),
    ("sy2026-27-q1", "Quarter 1 2026-2027", "gradingPeriod", "2026-08-01", "2026-10-17",
     "sy2026-27-s1"),
    ("sy2026-27-q2", "Quarter 2 2026-2027", "gradingPeriod", "2026-10-17", "2027-01-19",
     "sy2026-27-s1"),
    ("sy2026-27-q3", "Quarter 3 2026-2027", "gradingPeriod", "2027-01-19", "2027-04-03",
     "sy2026-27-s2"),
    ("sy2026-27-q4", "Quarter 4 2026-2027", "gradingPeriod", "2027-04-03", "2027-07-01",
     "sy2026-27-s2"),
)
_YEAR_TERM, _S1_TERM, _S2_TERM = 0, 1, 2  # indexes into SESSIONS

DISTRICT_ID: Final = "district"
DISTRICT_NAME: Final = "Springfield Unified School District"
STAFF_DOMAIN: Final = "springfield.example"
STUDENT_DOMAIN: Final = "students.springfield.example"

_SCHOOL_NAMES: Final = (
    "Lincoln", "Washington", "Roosevelt", "Jefferson", "Franklin", "Oak Grove", "Riverside",
    "Lakeview", "Hillcrest", "Maple Ridge", "Cedar Creek", "Sunnyvale", "Westwood", "Eastgate",
    "Northside", "Southview", "Pine Valley", "Willow Bend", "Brookside", "Fairview",
    "Harriet Tubman", "César Chávez", "Sojourner Truth", "Marie Curie", "Thurgood Marshall",
    "Sainte-Thérèse", "La Cañada", "Bellevue", "Greenfield", "Stonebridge", "Meadowbrook",
    "Highland Park", "Kennedy", "Madison", "Monroe", "Adams", "Garfield", "Emerson",
    "Whitman", "Ruby Bridges",
)

# --- people ---------------------------------------------------------------------------

FIRST_NAMES: Final = (
    "James", "Mary", "José", "Zoë", "Chloé", "Liam", "Olivia", "Noah", "Emma", "Mateo",
    "Sofía", "Aiden", "Amélie", "Björn", "Søren", "Łukasz", "Siobhán", "Renée", "Noémie",
    "Ayşe", "Jürgen", "François", "Inés", "Aarav", "Priya", "Mohammed", "Fatima", "Wei",
    "Mei", "Hiroshi", "Yuki", "Chidi", "Amara", "Kwame", "Ngozi", "Dmitri", "Anastasiya",
    "Zoltán", "Ágnes", "Éloïse", "Joaquín", "Ramón", "Lucía", "Ethan", "Ava", "Isabella",
    "Jackson", "Harper", "Elijah", "Mia", "Lucas", "Amelia", "Benjamin", "Evelyn", "Mason",
    "Abigail", "Oliver", "Charlotte", "Henry", "Grace", "Daniel", "Nora", "Sebastián",
    "Valentina", "Thảo", "Minh", "Khánh", "Linh", "D'Andre", "De'Shawn", "Ke'Andra", "Óscar",
    "Ángel", "Maëlle", "Anaïs", "Mary-Kate", "Jean-Luc", "Ana María", "Tomás", "Nuño",
)
LAST_NAMES: Final = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "García", "Rodríguez", "Martínez",
    "Hernández", "López", "González", "Pérez", "Núñez", "Muñoz", "Müller", "Schröder", "Weiß",
    "O'Brien", "O'Connor", "D'Angelo", "O'Neil", "D'Souza", "Nguyễn", "Trần", "Lê", "Phạm",
    "Kowalczyk", "Wójcik", "Dvořák", "Novák", "Šimek", "Øvergaard", "Ødegaard", "Johansson",
    "Lindqvist", "Åberg", "Kim", "Lee", "Park", "Chen", "Wang", "Singh", "Patel", "Okafor",
    "Adeyemi", "Mensah", "Ivanov", "Petrov", "Cohen", "Levi", "De la Cruz", "Van der Berg",
    "Smith-Jones", "MacDonald", "McAllister", "Fitzgerald", "Taylor", "Anderson", "Thomas",
    "Moore", "Jackson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young",
    "Allen", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell",
    "Mitchell", "Roberts", "Carter", "Evans", "Turner", "Torres", "Parker", "Collins",
    "Stewart", "Flores", "Morris", "Rivera", "Cook", "Rogers", "Morgan", "Cooper", "Reed",
    "Bailey", "Gómez", "Kelly", "Díaz", "Reyes", "Cruz", "Ortiz", "Gutiérrez", "Sullivan",
)
_APOSTROPHE_LAST: Final = np.array(
    [i for i, name in enumerate(LAST_NAMES) if "'" in name], dtype=np.int64
)

# What ASCII folding by decomposition alone does not reach.
_FOLD: Final = str.maketrans(
    {"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ß": "ss", "æ": "ae",
     "Æ": "AE", "œ": "oe", "Œ": "OE", "ı": "i", "þ": "th", "ð": "d"}
)


def ascii_fold(name: str, *, keep: str = "") -> str:
    """``name`` as lower-case ASCII letters and digits for emails and usernames
    (``Nguyễn`` → ``nguyen``, ``O'Brien`` → ``obrien``); characters in ``keep``
    survive (``keep="'"`` gives ``o'brien``)."""
    decomposed = unicodedata.normalize("NFKD", name.translate(_FOLD))
    return "".join(c for c in decomposed.lower() if (c.isascii() and c.isalnum()) or c in keep)


# --- the district as arrays ----------------------------------------------------------------


@dataclass(frozen=True)
class District:
    """One synthetic district, layout-free: numbers only, strings come at writing.

    People are numbered staff first (``0 .. n_staff-1``), then students. The
    numbers in IDs (``stu-0004711``) are a seeded permutation, so files are not
    sorted by ID and IDs say nothing about school or grade.
    """

    school_kind: IntArray
    school_names: tuple[str, ...]
    # staff, grouped by school: teachers, then administrators, then aides
    staff_school: IntArray
    staff_role: IntArray  # 0 teacher, 1 administrator, 2 aide
    staff_principal: npt.NDArray[np.bool_]  # first administrator of a school
    staff_second_school: IntArray  # -1 or another school (a few itinerant staff)
    # students, grouped by (school, grade)
    student_school: IntArray
    student_grade: IntArray  # index into GRADES
    # people (staff then students)
    person_number: IntArray  # the number in the person's ID
    first: IntArray
    middle: IntArray  # -1 = blank
    last: IntArray
    email_kind: IntArray  # 0 normal, 1 missing, 2 with an apostrophe
    password_policy: IntArray  # students: 0 blank, 1/2/3 for "4"/"6"/"8"
    # courses: (school, subject, grade)
    course_school: IntArray
    course_subject: IntArray
    course_grade: IntArray
    # classes, grouped by school
    class_course: IntArray
    class_section: IntArray  # 1-based within (course)
    class_term: IntArray  # index into SESSIONS
    instructors: IntArray  # (classes, 3) staff numbers, -1 = none; column 0 is primary
    # enrollments: the class of each student in each period
    student_classes: IntArray  # (students, 8)

    @property
    def n_schools(self) -> int:
        return len(self.school_kind)

    @property
    def n_staff(self) -> int:
        return len(self.staff_school)

    @property
    def n_students(self) -> int:
        return len(self.student_school)

    @property
    def n_courses(self) -> int:
        return len(self.course_school)

    @property
    def n_classes(self) -> int:
        return len(self.class_course)

    @property
    def class_school(self) -> IntArray:
        return self.course_school[self.class_course]

    @property
    def n_teacher_enrollments(self) -> int:
        return int((self.instructors >= 0).sum())


def school_count(students: int) -> int:
    """Schools for a district of ``students`` (5 / 40 / 150 / 1,000 at 2k / 25k / 100k / 1M)."""
    xs = np.log([p[0] for p in _SCHOOL_POINTS])
    ys = np.log([p[1] for p in _SCHOOL_POINTS])
    x = np.log(students)
    if x <= xs[0]:
        y = ys[0] + (x - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0])
    elif x >= xs[-1]:
        y = ys[-1] + (x - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    else:
        y = float(np.interp(x, xs, ys))
    return int(min(students, max(1, round(float(np.exp(y))))))


def _apportion(total: int, weights: npt.NDArray[np.float64], minimum: int = 0) -> IntArray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder),
    each at least ``minimum`` (``total`` must allow it)."""
    spare = total - minimum * len(weights)
    exact = spare * weights / weights.sum()
    parts: IntArray = np.floor(exact).astype(np.int64)
    short = spare - int(parts.sum())
    if short:
        parts[np.argsort(-(exact - parts), kind="stable")[:short]] += 1
    parts += minimum
    return parts


def _group_starts(counts: IntArray) -> IntArray:
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def _pick(rng: np.random.Generator, n: int, share: float) -> IntArray:
    """``round(n * share)`` distinct indexes, at least one when ``n`` > 0."""
    k = min(n, max(1, round(n * share))) if n else 0
    return rng.choice(n, size=k, replace=False).astype(np.int64)


def build_district(students: int, seed: int = 1) -> District:
    """The district for ``students`` and ``seed``; a pure function of both."""
    if students < 1:
        raise UsageError(f"a sample needs at least one student, not {students}")
    rng = np.random.default_rng(seed)

    # Schools and their students per grade.
    n_schools = school_count(students)
    school_kind = (
        np.full(1, 3, dtype=np.int64)
        if n_schools == 1
        else np.array(_KIND_CYCLE, dtype=np.int64)[np.arange(n_schools) % len(_KIND_CYCLE)]
    )
    kind_size = np.array([k[3] for k in _SCHOOL_KINDS])
    school_weight = kind_size[school_kind] * rng.uniform(0.7, 1.3, n_schools)
    school_students = _apportion(students, school_weight, minimum=1)
    grade_lo = np.array([k[1] for k in _SCHOOL_KINDS], dtype=np.int64)[school_kind]
    grade_hi = np.array([k[2] for k in _SCHOOL_KINDS], dtype=np.int64)[school_kind]
    n_grades = grade_hi - grade_lo + 1
    # Groups are (school, grade) in that order; students are laid out by group.
    group_school = np.repeat(np.arange(n_schools), n_grades)
    group_grade = np.arange(len(group_school)) - np.repeat(_group_starts(n_grades), n_grades)
    group_grade += grade_lo[group_school]
    group_count = np.concatenate(
        [rng.multinomial(int(p), np.full(int(g), 1.0 / int(g)))
         for p, g in zip(school_students, n_grades, strict=True)]
    ).astype(np.int64)
    student_group = np.repeat(np.arange(len(group_count)), group_count)
    student_school = group_school[student_group]
    student_grade = group_grade[student_group]

    # Staff: one per 14 students, spread like the students; teachers first.
    school_staff = _apportion(
        max(n_schools, round(students / STUDENTS_PER_STAFF)),
        school_students.astype(np.float64),
        minimum=1,
    )
    n_teachers = np.maximum(1, np.rint(school_staff * 0.85).astype(np.int64))
    n_admins = np.minimum(
        school_staff - n_teachers, np.where(school_staff >= 3, 1, 0) + school_staff // 40
    )
    staff_school = np.repeat(np.arange(n_schools), school_staff)
    staff_rank = np.arange(len(staff_school)) - _group_starts(school_staff)[staff_school]
    staff_role = np.where(
        staff_rank < n_teachers[staff_school],
        0,
        np.where(staff_rank < (n_teachers + n_admins)[staff_school], 1, 2),
    ).astype(np.int64)
    staff_principal = (staff_role == 1) & (staff_rank == n_teachers[staff_school])
    n_staff = len(staff_school)
    staff_second_school = np.full(n_staff, -1, dtype=np.int64)
    if n_schools > 1:
        itinerant = _pick(rng, n_staff, MULTI_SCHOOL_STAFF_SHARE)
        other = rng.integers(1, n_schools, len(itinerant))
        staff_second_school[itinerant] = (staff_school[itinerant] + other) % n_schools

    # Courses: every (school, subject, grade of the school).
    n_subjects = len(SUBJECTS)
    school_courses = n_grades * n_subjects
    course_school = np.repeat(np.arange(n_schools), school_courses)
    course_rank = np.arange(len(course_school)) - _group_starts(school_courses)[course_school]
    course_subject = course_rank // n_grades[course_school]
    course_grade = grade_lo[course_school] + course_rank % n_grades[course_school]
    course_start = _group_starts(school_courses)

    # Classes: each (group, period) is cut into sections of about 25 students.
    # Cells (group, subject) are numbered by school, subject, grade, so a
    # school's classes are contiguous and in the same order as its courses.
    group_sections = np.where(
        group_count > 0, np.maximum(1, (group_count + CLASS_SIZE // 2) // CLASS_SIZE), 0
    )
    cell_group = np.tile(np.arange(len(group_count)), n_subjects)
    cell_subject = np.repeat(np.arange(n_subjects), len(group_count))
    cell_order = np.lexsort((cell_group, cell_subject, group_school[cell_group]))
    cell_group, cell_subject = cell_group[cell_order], cell_subject[cell_order]
    cell_sections = group_sections[cell_group]
    cell_start = _group_starts(cell_sections)
    class_cell = np.repeat(np.arange(len(cell_group)), cell_sections)
    class_section = np.arange(len(class_cell)) - cell_start[class_cell] + 1
    class_group = cell_group[class_cell]
    class_school = group_school[class_group]
    class_subject = cell_subject[class_cell]
    class_course = (
        course_start[class_school]
        + class_subject * n_grades[class_school]
        + (group_grade[class_group] - grade_lo[class_school])
    )
    class_term = np.where(
        class_subject < _YEAR_LONG_SUBJECTS,
        _YEAR_TERM,
        np.where(class_section % 2 == 1, _S1_TERM, _S2_TERM),
    ).astype(np.int64)
    # first class of (group, subject): look up cells by (subject, group)
    cell_first_class = np.empty((n_subjects, len(group_count)), dtype=np.int64)
    cell_first_class[cell_subject, cell_group] = cell_start

    # Students into sections: a fresh shuffle of each group for every period.
    n_students = students
    group_start = _group_starts(group_count)
    student_classes = np.empty((n_students, n_subjects), dtype=np.int64)
    positions = np.arange(n_students)
    for subject in range(n_subjects):
        order = np.lexsort((rng.random(n_students), student_group))
        group = student_group[order]
        rank = positions - group_start[group]
        section = rank * group_sections[group] // group_count[group]
        student_classes[order, subject] = cell_first_class[subject, group] + section

    # Instructors: teachers take contiguous blocks of their school's classes.
    school_classes = np.bincount(class_school, minlength=n_schools).astype(np.int64)
    class_rank = np.arange(len(class_cell)) - _group_starts(school_classes)[class_school]
    teachers = n_teachers[class_school]
    staff_start = _group_starts(school_staff)[class_school]
    instructors = np.full((len(class_cell), 3), -1, dtype=np.int64)
    primary = class_rank * teachers // school_classes[class_school]
    instructors[:, 0] = staff_start + primary
    with_second = np.flatnonzero((rng.random(len(class_cell)) < SECOND_INSTRUCTOR_SHARE)
                                 & (teachers >= 2))
    offset_2 = rng.integers(1, np.maximum(2, teachers[with_second]))
    instructors[with_second, 1] = (
        staff_start[with_second] + (primary[with_second] + offset_2) % teachers[with_second]
    )
    third_share = THIRD_INSTRUCTOR_SHARE / SECOND_INSTRUCTOR_SHARE
    keep = (rng.random(len(with_second)) < third_share) & (teachers[with_second] >= 3)
    with_third, offset_2 = with_second[keep], offset_2[keep]
    draw = rng.integers(0, np.maximum(1, teachers[with_third] - 2)) + 1
    offset_3 = np.where(draw < offset_2, draw, draw + 1)  # any offset but 0 and offset_2
    instructors[with_third, 2] = (
        staff_start[with_third] + (primary[with_third] + offset_3) % teachers[with_third]
    )

    # People: names, ID numbers, emails, password policies.
    n_people = n_staff + n_students
    person_number = np.empty(n_people, dtype=np.int64)
    person_number[:n_staff] = rng.permutation(n_staff) + 1
    person_number[n_staff:] = rng.permutation(n_students) + 1
    first = rng.integers(0, len(FIRST_NAMES), n_people)
    middle = np.where(
        rng.random(n_people) < 0.6, rng.integers(0, len(FIRST_NAMES), n_people), -1
    )
    last = rng.integers(0, len(LAST_NAMES), n_people)
    email_kind = np.zeros(n_people, dtype=np.int64)
    for lo, hi in ((0, n_staff), (n_staff, n_people)):
        chosen = lo + _pick(rng, hi - lo, MISSING_EMAIL_SHARE + APOSTROPHE_EMAIL_SHARE)
        n_apostrophe = min(len(chosen), max(1, round((hi - lo) * APOSTROPHE_EMAIL_SHARE)))
        email_kind[chosen] = 1
        email_kind[chosen[:n_apostrophe]] = 2
    apostrophe = np.flatnonzero(email_kind == 2)
    last[apostrophe] = _APOSTROPHE_LAST[rng.integers(0, len(_APOSTROPHE_LAST), len(apostrophe))]
    draw_policy = rng.random(n_students)
    password_policy = np.select(
        [student_grade <= 2, student_grade <= 5, draw_policy < 0.1],
        [np.where(draw_policy < 0.9, 1, 0), np.where(draw_policy < 0.8, 2, 0), 3],
        0,
    ).astype(np.int64)

    names = []
    for i, kind in enumerate(school_kind):
        base = _SCHOOL_NAMES[i % len(_SCHOOL_NAMES)]
        number = f" No. {i // len(_SCHOOL_NAMES) + 1}" if i >= len(_SCHOOL_NAMES) else ""
        names.append(f"{base} {_SCHOOL_KINDS[kind][0]}{number}")

    return District(
        school_kind=school_kind,
        school_names=tuple(names),
        staff_school=staff_school,
        staff_role=staff_role,
        staff_principal=staff_principal,
        staff_second_school=staff_second_school,
        student_school=student_school,
        student_grade=student_grade,
        person_number=person_number,
        first=first,
        middle=middle,
        last=last,
        email_kind=email_kind,
        password_policy=password_policy,
        course_school=course_school,
        course_subject=course_subject,
        course_grade=course_grade,
        class_course=class_course,
        class_section=class_section,
        class_term=class_term,
        instructors=instructors,
        student_classes=student_classes,
    )


# --- from arrays to string columns ------------------------------------------------------------

_GRADE_TITLES: Final = ("Kindergarten", *(f"Grade {int(g)}" for g in GRADES[1:]))
_STAFF_ROLES_11: Final = ("teacher", "administrator", "aide")


def _pool(values: Sequence[str | None]) -> pl.Series:
    return pl.Series(values, dtype=pl.String)


def _or_blank(values: pl.Series) -> pl.Series:
    """``values`` plus a null at index ``len(values)``, for gathering with "none" as that index."""
    return pl.concat([values, _pool([None])])


def _ids(prefix: str, numbers: IntArray, width: int) -> pl.Series:
    """``prefix`` + zero-padded ``numbers`` (padding grows for very large districts)."""
    width = max(width, len(str(int(numbers.max())))) if len(numbers) else width
    return prefix + pl.Series(numbers, dtype=pl.Int64).cast(pl.String).str.zfill(width)


@dataclass(frozen=True)
class _Strings:
    """The string forms of the district's IDs and names, built once."""

    school_ids: pl.Series
    person_ids: pl.Series  # staff then students
    course_ids: pl.Series
    class_ids: pl.Series
    session_ids: pl.Series
    grades: pl.Series
    first: pl.Series
    middle: pl.Series  # last entry is null (no middle name)
    last: pl.Series
    first_ascii: pl.Series
    last_ascii: pl.Series
    last_apostrophe: pl.Series  # folded, apostrophes kept

    @classmethod
    def of(cls, d: District) -> _Strings:
        staff = _ids("stf-", d.person_number[: d.n_staff], 6)
        students = _ids("stu-", d.person_number[d.n_staff :], 7)
        return cls(
            school_ids=_ids("sch-", np.arange(1, d.n_schools + 1), 4),
            person_ids=pl.concat([staff, students]),
            course_ids=_ids("crs-", np.arange(1, d.n_courses + 1), 5),
            class_ids=_ids("cls-", np.arange(1, d.n_classes + 1), 6),
            session_ids=_pool([s[0] for s in SESSIONS]),
            grades=_pool(GRADES),
            first=_pool(FIRST_NAMES),
            middle=_or_blank(_pool(FIRST_NAMES)),
            last=_pool(LAST_NAMES),
            first_ascii=_pool([ascii_fold(n) for n in FIRST_NAMES]),
            last_ascii=_pool([ascii_fold(n) for n in LAST_NAMES]),
            last_apostrophe=_pool([ascii_fold(n, keep="'") for n in LAST_NAMES]),
        )


def _people(d: District, s: _Strings, lo: int, hi: int) -> pl.DataFrame:
    """People ``lo .. hi-1`` (all staff or all students) with layout-free columns."""
    staff = hi <= d.n_staff
    if not staff and lo < d.n_staff:
        raise ValueError("a people chunk mixes staff and students")
    n = hi - lo
    first, last = d.first[lo:hi], d.last[lo:hi]
    middle = d.middle[lo:hi]
    if staff:
        school = d.staff_school[lo:hi]
        second = d.staff_second_school[lo:hi]
        grade = pl.repeat(None, n, dtype=pl.String, eager=True)
        number = "E" + pl.Series(d.person_number[lo:hi] + 10_000).cast(pl.String)
        domain = "@" + STAFF_DOMAIN
    else:
        school = d.student_school[lo - d.n_staff : hi - d.n_staff]
        second = np.full(n, -1, dtype=np.int64)
        grade = s.grades.gather(d.student_grade[lo - d.n_staff : hi - d.n_staff])
        number = pl.Series(d.person_number[lo:hi] + 200_000).cast(pl.String)
        domain = "@" + STUDENT_DOMAIN
    frame = pl.DataFrame(
        {
            "person_id": s.person_ids.slice(lo, n),
            "number": number,
            "first_name": s.first.gather(first),
            "middle_name": s.middle.gather(np.where(middle < 0, len(FIRST_NAMES), middle)),
            "last_name": s.last.gather(last),
            "grade": grade,
            "school_id": s.school_ids.gather(school),
            "second_school_id": _or_blank(s.school_ids).gather(
                np.where(second < 0, d.n_schools, second)
            ),
            "email_kind": d.email_kind[lo:hi],
            "_first": s.first_ascii.gather(first),
            "_last": s.last_ascii.gather(last),
            "_last_apostrophe": s.last_apostrophe.gather(last),
            "_num": pl.Series(d.person_number[lo:hi]).cast(pl.String),
        }
    )
    if staff:
        username = pl.concat_str(pl.col("_first").str.slice(0, 1), "_last", "_num")
    else:
        username = pl.concat_str("_first", pl.lit("."), "_last", "_num")
    frame = frame.with_columns(username=username)
    email = (
        pl.when(pl.col("email_kind") == 1)
        .then(pl.lit(None, pl.String))
        .when(pl.col("email_kind") == 2)
        .then(pl.concat_str("_last_apostrophe", pl.lit("."), "_first", "_num", pl.lit(domain)))
        .otherwise(pl.concat_str("username", pl.lit(domain)))
    )
    return frame.with_columns(email=email).drop("_first", "_last", "_last_apostrophe", "_num")


def _ranges(total: int, step: int, start: int = 0) -> Iterator[tuple[int, int]]:
    for lo in range(start, start + total, step):
        yield lo, min(lo + step, start + total)


def _project(frame: pl.DataFrame, header: Sequence[str], **columns: pl.Expr | str) -> pl.DataFrame:
    """``frame`` as exactly ``header``: named expressions, or blank where none is given."""
    exprs = []
    for name in header:
        value = columns.get(name)
        if value is None:
            exprs.append(pl.lit(None, pl.String).alias(name))
        elif isinstance(value, str):
            exprs.append(pl.col(value).alias(name))
        else:
            exprs.append(value.alias(name))
    return frame.select(exprs)


def _staff_room(d: District) -> IntArray:
    """Room number of each class: its primary teacher's room."""
    first_staff = np.searchsorted(d.staff_school, np.arange(d.n_schools))
    return 101 + d.instructors[:, 0] - first_staff[d.class_school]


def _courses(d: District, s: _Strings) -> pl.DataFrame:
    subject = d.course_subject
    return pl.DataFrame(
        {
            "id": s.course_ids,
            "title": _pool([x[0] for x in SUBJECTS]).gather(subject)
            + " - "
            + _pool(_GRADE_TITLES).gather(d.course_grade),
            "code": _pool([x[1] for x in SUBJECTS]).gather(subject)
            + "-"
            + s.grades.gather(d.course_grade),
            "grade": s.grades.gather(d.course_grade),
            "school_id": s.school_ids.gather(d.course_school),
            "subject": _pool([x[0] for x in SUBJECTS]).gather(subject),
        }
    )


def _classes(d: District, s: _Strings) -> pl.DataFrame:
    courses = _courses(d, s)
    course = d.class_course
    section = pl.Series(d.class_section).cast(pl.String).str.zfill(2)
    instructor_ids = _or_blank(s.person_ids)
    no_one = len(instructor_ids) - 1
    return pl.DataFrame(
        {
            "id": s.class_ids,
            "title": courses["title"].gather(course) + " - Section " + section,
            "grade": courses["grade"].gather(course),
            "course_id": s.course_ids.gather(course),
            "code": courses["code"].gather(course) + "-" + section,
            "type": _pool([x[2] for x in SUBJECTS]).gather(d.course_subject[course]),
            "room": "Room " + pl.Series(_staff_room(d)).cast(pl.String),
            "school_id": s.school_ids.gather(d.class_school),
            "term_id": s.session_ids.gather(d.class_term),
            "subject": courses["subject"].gather(course),
            "period": pl.Series(d.course_subject[course] + 1).cast(pl.String),
            **{
                f"instructor_{i}": instructor_ids.gather(
                    np.where(d.instructors[:, i] < 0, no_one, d.instructors[:, i])
                )
                for i in range(3)
            },
        }
    )


def _enrollments(
    d: District, s: _Strings, *, teachers: bool, rows_per_chunk: int
) -> Iterator[pl.DataFrame]:
    """Enrollments by blocks of schools, sorted by class: teachers (primary first),
    then students by ID. Columns: number (1-based, running), class_id, school_id,
    person_id, kind (0 primary teacher, 1 other teacher, 2 student)."""
    per_school = np.bincount(d.student_school, minlength=d.n_schools)
    student_start = np.concatenate([[0], np.cumsum(per_school)])
    class_start = np.concatenate(
        [[0], np.cumsum(np.bincount(d.class_school, minlength=d.n_schools))]
    )
    school_block = np.cumsum(per_school) * CLASSES_PER_STUDENT // max(1, rows_per_chunk)
    blocks = np.flatnonzero(np.diff(school_block, append=school_block[-1] + 1))
    done, first_school = 0, 0
    for last_school in blocks.tolist():
        a, b = student_start[first_school], student_start[last_school + 1]
        ca, cb = class_start[first_school], class_start[last_school + 1]
        first_school = last_school + 1
        person = np.repeat(np.arange(a, b), d.student_classes.shape[1]) + d.n_staff
        klass = d.student_classes[a:b].ravel()
        kind = np.full(len(person), 2, dtype=np.int64)
        if teachers:
            block = d.instructors[ca:cb]
            row, column = np.nonzero(block >= 0)
            person = np.concatenate([block[row, column], person])
            klass = np.concatenate([ca + row, klass])
            kind = np.concatenate([np.minimum(column, 1), kind])
        order = np.lexsort((d.person_number[person], kind, klass))
        person, klass, kind = person[order], klass[order], kind[order]
        yield pl.DataFrame(
            {
                "number": np.arange(done + 1, done + len(person) + 1),
                "class_id": s.class_ids.gather(klass),
                "school_id": s.school_ids.gather(d.class_school[klass]),
                "person_id": s.person_ids.gather(person),
                "kind": kind,
            }
        )
        done += len(person)


# --- layouts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One CSV of the ZIP; ``frames`` yields its rows in chunks, each exactly ``header``."""

    name: str
    header: tuple[str, ...]
    frames: Callable[[], Iterator[pl.DataFrame]]
    rows_hint: int


def _one(frame: pl.DataFrame) -> Callable[[], Iterator[pl.DataFrame]]:
    return lambda: iter([frame])


def _oneroster(d: District, s: _Strings, version: str, chunk: int) -> list[_Entry]:
    supplied = ["academicSessions", "classes", "courses", "enrollments", "orgs", "users"]
    if version == "1.2":
        supplied.append("roles")
    manifest = pl.DataFrame(
        {
            "propertyName": [
                "manifest.version", "oneroster.version",
                *(f"file.{name}" for name in MANIFEST_FILES[version]),
                "source.systemName", "source.systemCode",
            ],
            "value": [
                "1.0", version,
                *("bulk" if name in supplied else "absent" for name in MANIFEST_FILES[version]),
                "rosterdrop sample", "rosterdrop",
            ],
        }
    )
    orgs = pl.DataFrame(
        {
            "sourcedId": [DISTRICT_ID, *s.school_ids],
            "name": [DISTRICT_NAME, *d.school_names],
            "type": ["district", *(["school"] * d.n_schools)],
            "identifier": [
                "0600001", *(f"06000{i + 1:04d}" for i in range(d.n_schools))
            ],
            "parentSourcedId": [None, *([DISTRICT_ID] * d.n_schools)],
        }
    )
    sessions = pl.DataFrame(
        {
            "sourcedId": [x[0] for x in SESSIONS],
            "title": [x[1] for x in SESSIONS],
            "type": [x[2] for x in SESSIONS],
            "startDate": [x[3] for x in SESSIONS],
            "endDate": [x[4] for x in SESSIONS],
            "parentSourcedId": [x[5] or None for x in SESSIONS],
            "schoolYear": [SCHOOL_YEAR] * len(SESSIONS),
        }
    )
    courses = _courses(d, s)
    classes = _classes(d, s)
    users_header = USERS_11_HEADER if version == "1.1" else USERS_12_HEADER

    def users() -> Iterator[pl.DataFrame]:
        for lo, hi in [*_ranges(d.n_staff, chunk), *_ranges(d.n_students, chunk, d.n_staff)]:
            people = _people(d, s, lo, hi)
            if hi <= d.n_staff:
                role = _pool(_STAFF_ROLES_11).gather(d.staff_role[lo:hi])
            else:
                role = _pool(["student"]).gather(np.zeros(hi - lo, dtype=np.int64))
            common: dict[str, pl.Expr | str] = {
                "sourcedId": "person_id",
                "enabledUser": pl.lit("true"),
                "username": "username",
                "givenName": "first_name",
                "familyName": "last_name",
                "middleName": "middle_name",
                "identifier": "number",
                "email": "email",
                "grades": "grade",
            }
            if version == "1.1":
                orgs_list = pl.concat_str(
                    "school_id", "second_school_id", separator=",", ignore_nulls=True
                )
                yield _project(
                    people, users_header, **common, orgSourcedIds=orgs_list, role=pl.lit(role)
                )
            else:
                yield _project(people, users_header, **common, primaryOrgSourcedId="school_id")

    def roles() -> Iterator[pl.DataFrame]:
        staff_role = np.where(d.staff_principal, 3, d.staff_role)
        names = _pool(["teacher", "siteAdministrator", "aide", "principal", "student"])
        for lo, hi in [*_ranges(d.n_staff, chunk), *_ranges(d.n_students, chunk, d.n_staff)]:
            people = _people(d, s, lo, hi)
            code = staff_role[lo:hi] if hi <= d.n_staff else np.full(hi - lo, 4, dtype=np.int64)
            role = names.gather(code)
            primary = _project(
                people.with_columns(role=role), ROLES_HEADER,
                sourcedId=pl.concat_str(pl.lit("rol-"), "person_id"),
                userSourcedId="person_id", roleType=pl.lit("primary"), role="role",
                orgSourcedId="school_id",
            )
            secondary = _project(
                people.with_columns(role=role).filter(pl.col("second_school_id").is_not_null()),
                ROLES_HEADER,
                sourcedId=pl.concat_str(pl.lit("rol-"), "person_id", pl.lit("-2")),
                userSourcedId="person_id", roleType=pl.lit("secondary"), role="role",
                orgSourcedId="second_school_id",
            )
            yield pl.concat([primary, secondary])

    def enrollments() -> Iterator[pl.DataFrame]:
        kinds = pl.col("kind")
        for frame in _enrollments(d, s, teachers=True, rows_per_chunk=chunk * 2):
            yield _project(
                frame, ENROLLMENTS_HEADER,
                sourcedId=pl.concat_str(
                    pl.lit("enr-"), pl.col("number").cast(pl.String).str.zfill(8)
                ),
                classSourcedId="class_id", schoolSourcedId="school_id",
                userSourcedId="person_id",
                role=pl.when(kinds == 2).then(pl.lit("student")).otherwise(pl.lit("teacher")),
                primary=pl.when(kinds == 0).then(pl.lit("true")).otherwise(pl.lit("false")),
            )

    n_people = d.n_staff + d.n_students
    entries = [
        _Entry("manifest.csv", MANIFEST_HEADER, _one(manifest), manifest.height),
        _Entry("orgs.csv", ORGS_HEADER, _one(_project(orgs, ORGS_HEADER, **_same(orgs))),
               orgs.height),
        _Entry("academicSessions.csv", SESSIONS_HEADER,
               _one(_project(sessions, SESSIONS_HEADER, **_same(sessions))), sessions.height),
        _Entry("courses.csv", COURSES_HEADER, _one(_project(
            courses, COURSES_HEADER, sourcedId="id", schoolYearSourcedId=pl.lit(SESSIONS[0][0]),
            title="title", courseCode="code", grades="grade", orgSourcedId="school_id",
            subjects="subject",
        )), courses.height),
        _Entry("classes.csv", CLASSES_HEADER, _one(_project(
            classes, CLASSES_HEADER, sourcedId="id", title="title", grades="grade",
            courseSourcedId="course_id", classCode="code", classType="type", location="room",
            schoolSourcedId="school_id", termSourcedIds="term_id", subjects="subject",
            periods="period",
        )), classes.height),
        _Entry("users.csv", users_header, users, n_people),
    ]
    if version == "1.2":
        entries.append(_Entry("roles.csv", ROLES_HEADER, roles, n_people))
    entries.append(_Entry(
        "enrollments.csv", ENROLLMENTS_HEADER, enrollments,
        d.n_students * CLASSES_PER_STUDENT + d.n_teacher_enrollments,
    ))
    return entries


def _same(frame: pl.DataFrame) -> dict[str, pl.Expr | str]:
    return {name: name for name in frame.columns}


def _asm(d: District, s: _Strings, chunk: int) -> list[_Entry]:
    headers = ASM_HEADERS
    locations = pl.DataFrame({"location_id": s.school_ids, "location_name": d.school_names})
    courses = _courses(d, s)
    classes = _classes(d, s)
    person = {
        "person_id": "person_id", "person_number": "number", "first_name": "first_name",
        "middle_name": "middle_name", "last_name": "last_name", "email_address": "email",
        "sis_username": "username", "location_id": "school_id",
    }

    def staff() -> Iterator[pl.DataFrame]:
        for lo, hi in _ranges(d.n_staff, chunk):
            yield _project(_people(d, s, lo, hi), headers["staff.csv"], **person)

    def students() -> Iterator[pl.DataFrame]:
        policies = _pool([None, "4", "6", "8"])
        for lo, hi in _ranges(d.n_students, chunk, d.n_staff):
            policy = policies.gather(d.password_policy[lo - d.n_staff : hi - d.n_staff])
            yield _project(
                _people(d, s, lo, hi).with_columns(policy=policy), headers["students.csv"],
                **person, grade_level="grade", password_policy="policy",
            )

    def rosters() -> Iterator[pl.DataFrame]:
        for frame in _enrollments(d, s, teachers=False, rows_per_chunk=chunk * 2):
            yield _project(
                frame, headers["rosters.csv"],
                roster_id=pl.concat_str(
                    pl.lit("ros-"), pl.col("number").cast(pl.String).str.zfill(8)
                ),
                class_id="class_id", student_id="person_id",
            )

    return [
        _Entry("locations.csv", headers["locations.csv"], _one(locations), d.n_schools),
        _Entry("staff.csv", headers["staff.csv"], staff, d.n_staff),
        _Entry("students.csv", headers["students.csv"], students, d.n_students),
        _Entry("courses.csv", headers["courses.csv"], _one(_project(
            courses, headers["courses.csv"], course_id="id", course_number="code",
            course_name="title", location_id="school_id",
        )), d.n_courses),
        _Entry("classes.csv", headers["classes.csv"], _one(_project(
            classes, headers["classes.csv"], class_id="id", class_number="code",
            course_id="course_id", instructor_id="instructor_0",
            instructor_id_2="instructor_1", instructor_id_3="instructor_2",
            location_id="school_id",
        )), d.n_classes),
        _Entry("rosters.csv", headers["rosters.csv"], rosters,
               d.n_students * CLASSES_PER_STUDENT),
    ]


# --- the ZIP ----------------------------------------------------------------------------------

ZIP_DATE: Final = (2026, 8, 1, 0, 0, 0)
COMPRESS_LEVEL: Final = 6
CHUNK_ROWS: Final = 250_000


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, whatever the platform
    info.external_attr = 0o100644 << 16
    # ZipFile.open(info, "w") takes the level from the ZipInfo (renamed in 3.13).
    setattr(info, "compress_level" if sys.version_info >= (3, 13) else "_compresslevel",
            COMPRESS_LEVEL)
    return info


def _write_entry(zf: zipfile.ZipFile, entry: _Entry) -> int:
    rows = 0
    # zip64 headers only where a file might pass 2 GiB, so small samples stay plain ZIPs
    big = entry.rows_hint * 256 >= zipfile.ZIP64_LIMIT
    with zf.open(_zip_info(entry.name), "w", force_zip64=big) as stream:
        for i, frame in enumerate(entry.frames()):
            if tuple(frame.columns) != entry.header:
                raise AssertionError(f"{entry.name}: columns {frame.columns} != header")
            _write_csv(frame, stream, header=i == 0)
            rows += frame.height
    return rows


def _write_csv(frame: pl.DataFrame, stream: IO[bytes], *, header: bool) -> None:
    frame.write_csv(stream, include_header=header, line_terminator="\n", null_value="")


def write_sample(
    out: Path, *, layout: Layout, students: int, seed: int = 1
) -> dict[str, int]:
    """Write a synthetic upload of ``students`` students in ``layout`` to ``out``.

    Returns the counts of what was written: ``schools``, ``students``,
    ``staff``, ``courses``, ``classes`` and ``enrollments`` (OneRoster, teacher
    and student rows) or ``rosters`` (ASM). The same arguments give the same
    bytes. The file appears atomically (written aside, then renamed).
    Raises ``UsageError`` for a bad layout or student count, ``InputError`` when
    ``out`` cannot be written.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    d = build_district(students, seed)
    s = _Strings.of(d)
    if layout == "asm":
        entries = _asm(d, s, CHUNK_ROWS)
    else:
        entries = _oneroster(d, s, layout.removeprefix("oneroster-"), CHUNK_ROWS)

    out = Path(out)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    rows: dict[str, int] = {}
    try:
        with zipfile.ZipFile(partial, "w") as zf:
            for entry in entries:
                rows[entry.name] = _write_entry(zf, entry)
        os.replace(partial, out)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()

    link = "rosters.csv" if layout == "asm" else "enrollments.csv"
    return {
        "schools": d.n_schools,
        "students": d.n_students,
        "staff": d.n_staff,
        "courses": d.n_courses,
        "classes": d.n_classes,
        "rosters" if layout == "asm" else "enrollments": rows[link],
    }
