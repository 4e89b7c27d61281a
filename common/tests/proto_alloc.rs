//! The frame limit is checked before allocating: a header declaring a huge
//! frame is refused without any large allocation. A counting global
//! allocator records the largest single allocation during the decode.

use imgfarm_common::proto::io::{read_msg, WireError};
use imgfarm_common::proto::{CodecError, FrameDecoder, Message, MAX_CONTROL_FRAME};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: ptr came from System with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The tests share LARGEST: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn oversized_frames_are_refused_before_allocation() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for declared in [MAX_CONTROL_FRAME + 1, u32::MAX] {
        LARGEST.store(0, Ordering::Relaxed);
        let mut d = FrameDecoder::new(MAX_CONTROL_FRAME);
        let err = d.push(&declared.to_be_bytes()).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { .. }));

        // The async reader, fed the header and then 1 MiB of garbage body.
        let mut bytes = declared.to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(0xAB, 1 << 20));
        let r: Result<Option<Message>, WireError> =
            rt.block_on(read_msg(&mut &bytes[..], MAX_CONTROL_FRAME));
        assert!(matches!(
            r,
            Err(WireError::Codec(CodecError::FrameTooLarge { .. }))
        ));
        drop(bytes);
        // Only the test's own 1 MiB buffer; nothing near the declared size.
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest <= (1 << 20) + 64,
            "largest allocation {largest} bytes"
        );
    }
}

#[test]
fn a_hostile_length_inside_a_frame_is_bounded_by_the_decode_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A VertexLog whose data claims 2^40 bytes in a 20-byte frame.
    let mut body = vec![4u8]; // variant index of Message::VertexLog
    body.push(0); // empty vertex_key
    body.push(1); // stream
    body.push(253); // varint u64 follows
    body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    LARGEST.store(0, Ordering::Relaxed);
    let r = imgfarm_common::proto::decode_message::<Message>(&body);
    assert!(r.is_err());
    // serde preallocates at most 1 MiB for a claimed length ("cautious"
    // size hint) and bincode's limit stops the read: nothing near 2^40.
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= (1 << 20), "largest allocation {largest} bytes");
}
