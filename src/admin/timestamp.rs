//! RFC 3339 timestamps in UTC with milliseconds (`2026-11-21T10:00:00.123Z`), for the admin
//! API's JSON. Hand-written (days to civil date) rather than a date-time dependency for one
//! format.

use std::time::{SystemTime, UNIX_EPOCH};

/// `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC. Times before 1970 are written too (they do not
/// occur here, but a clock set far back must not break the API).
pub fn rfc3339(at: SystemTime) -> String {
    let millis: i128 = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_millis() as i128,
        Err(before) => -(before.duration().as_millis() as i128),
    };
    const DAY: i128 = 86_400_000;
    let days = millis.div_euclid(DAY);
    let in_day = millis.rem_euclid(DAY);
    let (year, month, day) = civil_from_days(days);
    let (secs, ms) = (in_day / 1000, in_day % 1000);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`:
/// counts in 400-year eras that start on 1 March, so the leap day is the last day of a year).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(millis: i64) -> SystemTime {
        if millis >= 0 {
            UNIX_EPOCH + Duration::from_millis(millis as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(millis.unsigned_abs())
        }
    }

    #[test]
    fn known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1, "1970-01-01T00:00:00.001Z"),
            (86_399_999, "1970-01-01T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-86_400_000, "1969-12-31T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"), // a leap day of a 400-year leap
            (951_868_800_000, "2000-03-01T00:00:00.000Z"),
            (1_709_164_800_000, "2024-02-29T00:00:00.000Z"),
            (1_735_689_599_999, "2024-12-31T23:59:59.999Z"),
            (1_735_689_600_000, "2025-01-01T00:00:00.000Z"),
            (1_795_255_200_123, "2026-11-21T10:00:00.123Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"), // 2100 is not a leap year
            (4_107_456_000_000, "2100-02-28T00:00:00.000Z"),
        ];
        for (millis, want) in cases {
            assert_eq!(rfc3339(at(millis)), want, "{millis}");
        }
    }

    #[test]
    fn agrees_with_day_counting_for_every_day_of_four_centuries() {
        // Walk day by day from 1900-01-01 and check each date follows the previous one.
        let mut days = -25_567; // 1900-01-01
        let (mut y, mut m, mut d) = civil_from_days(days);
        assert_eq!((y, m, d), (1900, 1, 1));
        while days < 146_097 * 2 {
            days += 1;
            let next = civil_from_days(days);
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let want = if d < month_len {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!(next, want, "day {days}");
            (y, m, d) = next;
        }
    }
}
