//! The line framer (src/output/frame.rs).
//!
//! Any input cut into any reads, any cap: no panic; the frames (a `\n` after each
//! complete line) joined back are the input; no frame is longer than the cap; a
//! piece of an over-long line is exactly the cap and a line holds no `\n`. The
//! tail kept for exit classification never holds more lines than its limit.
#![no_main]

use agentsup::output::{Frame, LineFramer, Tail};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let max = u.int_in_range(1..=300)?;
    let tail_lines = u.int_in_range(1..=8)?;
    let tail_bytes = u.int_in_range(1..=64)?;
    let mut cuts: Vec<u16> = u.arbitrary()?;
    let input = u.bytes(u.len())?;
    let mut framer = LineFramer::with_max(max);
    let mut tail = Tail::with_limits(tail_lines, tail_bytes);
    let mut joined = Vec::with_capacity(input.len());
    let mut at = 0;
    cuts.push(u16::MAX);
    for cut in cuts {
        if at >= input.len() {
            break;
        }
        let end = (at + usize::from(cut) % 97 + 1).min(input.len());
        let read = &input[at..end];
        at = end;
        let mut pos = 0;
        while let Some(frame) = framer.next_frame(read, &mut pos) {
            match frame {
                Frame::Line(l) => {
                    assert!(l.len() <= max, "line of {} > cap {max}", l.len());
                    assert!(!l.contains(&b'\n'));
                    joined.extend_from_slice(l);
                    joined.push(b'\n');
                    tail.push(l);
                }
                Frame::Piece(p) => {
                    assert_eq!(p.len(), max, "a piece is exactly the cap");
                    joined.extend_from_slice(p);
                }
            }
            assert!(tail.len() <= tail_lines);
        }
        assert_eq!(pos, read.len(), "the framer stopped inside a read");
    }
    if at < input.len() {
        // The cuts ran out: the rest is one read.
        let read = &input[at..];
        let mut pos = 0;
        while let Some(frame) = framer.next_frame(read, &mut pos) {
            match frame {
                Frame::Line(l) => {
                    assert!(l.len() <= max);
                    joined.extend_from_slice(l);
                    joined.push(b'\n');
                }
                Frame::Piece(p) => {
                    assert_eq!(p.len(), max);
                    joined.extend_from_slice(p);
                }
            }
        }
    }
    if let Some(last) = framer.finish() {
        assert!(last.len() <= max);
        assert!(!last.contains(&b'\n'));
        joined.extend_from_slice(last);
    }
    assert!(
        framer.finish().is_none(),
        "finish twice gave the last line twice"
    );
    assert!(joined == input, "frames do not join back into the input");
    Ok(())
}
