//! The balance chart of the home page: daily closing balances over the last days, drawn as an
//! SVG line on the server (no script needed), with a text summary for screen readers.

use crate::i18n::day_start_ms;

/// Days the home page's chart covers.
pub const CHART_DAYS: usize = 30;
const DAY_MS: i64 = 86_400_000;

/// One movement of the wallet: when, and the posted balance right after it.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub at_ms: i64,
    pub balance: i128,
}

/// The closing balance of each of the `days` JST days ending today, oldest first.
///
/// `movements` are newest first, as the history gives them; `balance_now` is the posted balance
/// now. `complete` says the movements reach back to the wallet's opening; when they do not, a
/// day before the oldest one read shows that movement's balance, the best known.
pub fn daily_balances(
    now_ms: i64,
    balance_now: i128,
    movements: &[Point],
    complete: bool,
    days: usize,
) -> Vec<i128> {
    let today = day_start_ms(now_ms);
    let mut out = Vec::with_capacity(days);
    for back in (0..days).rev() {
        let back = i64::try_from(back).unwrap_or(0);
        let end = today
            .saturating_add(DAY_MS)
            .saturating_sub(back.saturating_mul(DAY_MS));
        let balance = if end > now_ms {
            balance_now
        } else {
            match movements.iter().find(|m| m.at_ms < end) {
                Some(m) => m.balance,
                None if complete => 0,
                None => movements.last().map_or(balance_now, |m| m.balance),
            }
        };
        out.push(balance);
    }
    out
}

/// An SVG polyline's points for `values` in a `width` x `height` box (y grows downwards).
pub fn polyline(values: &[i128], width: u32, height: u32) -> String {
    let (Some(min), Some(max)) = (values.iter().min(), values.iter().max()) else {
        return String::new();
    };
    let (min, max) = (min.min(&0), *max);
    let span = (max - min).max(1);
    let steps = i128::try_from(values.len().saturating_sub(1).max(1)).unwrap_or(1);
    let (w, h) = (i128::from(width), i128::from(height));
    values
        .iter()
        .zip(0i128..)
        .map(|(v, i)| {
            let x = i * w / steps;
            let y = h - (v - min) * h / span;
            format!("{x},{y}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One column of a column chart, in the box's coordinates (y grows downwards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub x: i128,
    pub y: i128,
    pub width: i128,
    pub height: i128,
    /// Above the alarm level.
    pub over: bool,
}

/// Columns for `values` in a `width` x `height` box, and the y of each level in `levels`;
/// the scale reaches the highest value or level. `alarm` marks the columns above it.
pub fn columns(
    values: &[i64],
    levels: &[i64],
    alarm: i64,
    width: u32,
    height: u32,
) -> (Vec<Column>, Vec<i128>) {
    let top = values
        .iter()
        .chain(levels)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let (top, h) = (i128::from(top), i128::from(height));
    let slot = i128::from(width) / i128::try_from(values.len().max(1)).unwrap_or(1);
    let y_of = |v: i64| h - i128::from(v.max(0)) * h / top;
    let bars = values
        .iter()
        .zip(0i128..)
        .map(|(v, i)| {
            let y = y_of(*v);
            Column {
                x: i * slot + slot / 8,
                y,
                width: (slot * 3 / 4).max(1),
                height: h - y,
                over: *v > alarm,
            }
        })
        .collect();
    (bars, levels.iter().map(|l| y_of(*l)).collect())
}

/// A bar's length out of 100 for `value` against the largest `top` (a small non-zero value
/// still shows).
pub fn share(value: i128, top: i128) -> i128 {
    if value <= 0 || top <= 0 {
        return 0;
    }
    (value * 100 / top).clamp(1, 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-06T03:00:00Z, noon in Tokyo.
    const NOW: i64 = 1_796_526_000_000;

    #[test]
    fn each_day_closes_with_its_last_movement() {
        let movements = [
            Point {
                at_ms: NOW - 3_600_000,
                balance: 700,
            },
            Point {
                at_ms: NOW - 2 * DAY_MS,
                balance: 1_000,
            },
            Point {
                at_ms: NOW - 2 * DAY_MS - 60_000,
                balance: 400,
            },
        ];
        let days = daily_balances(NOW, 700, &movements, true, 4);
        assert_eq!(days, vec![0, 1_000, 1_000, 700]);
    }

    #[test]
    fn an_incomplete_history_carries_its_oldest_balance_back() {
        let movements = [Point {
            at_ms: NOW - DAY_MS,
            balance: 500,
        }];
        assert_eq!(
            daily_balances(NOW, 500, &movements, false, 3),
            vec![500, 500, 500]
        );
        assert_eq!(
            daily_balances(NOW, 500, &movements, true, 3),
            vec![0, 500, 500]
        );
        assert_eq!(daily_balances(NOW, 0, &[], true, 2), vec![0, 0]);
    }

    #[test]
    fn columns_share_the_scale_with_the_levels() {
        let (bars, levels) = columns(&[0, 5, 20], &[2, 10], 10, 300, 100);
        assert_eq!(bars.len(), 3);
        assert_eq!((bars[0].x, bars[0].width, bars[0].height), (12, 75, 0));
        assert_eq!((bars[2].y, bars[2].height, bars[2].over), (0, 100, true));
        assert_eq!((bars[1].height, bars[1].over), (25, false));
        assert_eq!(levels, vec![90, 50]);
        // A quiet half hour still has a scale: the levels set it.
        let (bars, levels) = columns(&[0, 0], &[4], 8, 100, 40);
        assert_eq!(bars[0].height, 0);
        assert_eq!(levels, vec![0]);
    }

    #[test]
    fn shares_show_small_values() {
        assert_eq!(share(1, 1_000), 1);
        assert_eq!(share(500, 1_000), 50);
        assert_eq!(share(0, 1_000), 0);
        assert_eq!(share(5, 0), 0);
    }

    #[test]
    fn the_line_spans_the_box() {
        assert_eq!(polyline(&[0, 50, 100], 200, 100), "0,100 100,50 200,0");
        assert_eq!(polyline(&[7, 7], 10, 10), "0,0 10,0");
        assert_eq!(polyline(&[], 10, 10), "");
    }
}
