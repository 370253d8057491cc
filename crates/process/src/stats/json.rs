//! JSON written by hand for the state entries and records written most
//! often, byte for byte what serde_json writes for the same values (serde_json
//! escapes every field name at run time; these have dozens). Strings and
//! floats go through serde_json itself; the tests compare with serde_json.

use super::record::Summary;

/// Appends JSON to a buffer.
pub struct Writer<'a> {
    pub out: &'a mut Vec<u8>,
    n: itoa::Buffer,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out, n: itoa::Buffer::new() }
    }
    pub fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }
    pub fn num<I: itoa::Integer>(&mut self, v: I) {
        self.out.extend_from_slice(self.n.format(v).as_bytes());
    }
    pub fn field<I: itoa::Integer>(&mut self, name: &str, v: I) {
        self.raw(name);
        self.num(v);
    }
    /// A JSON string, escaped as serde_json escapes it (writing into a Vec
    /// cannot fail): copied as it is when nothing in it needs an escape
    /// (serde_json escapes `"`, `\\` and control characters below 0x20).
    pub fn str(&mut self, s: &str) {
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.out.reserve(s.len() + 2);
            self.out.push(b'"');
            self.out.extend_from_slice(s.as_bytes());
            self.out.push(b'"');
            return;
        }
        let _ = serde_json::to_writer(&mut *self.out, s);
    }
    pub fn list(&mut self, v: &[u64]) {
        self.out.push(b'[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.num(*x);
        }
        self.out.push(b']');
    }
    pub fn summary(&mut self, s: &Summary) {
        self.raw("{\"mean\":");
        let _ = serde_json::to_writer(&mut *self.out, &s.mean);
        self.field(",\"median\":", s.median as u64);
        self.field(",\"p90\":", s.p90 as u64);
        self.out.push(b'}');
    }
}

impl Writer<'_> {
    /// `["a","b"]`.
    pub fn strs(&mut self, v: &[String]) {
        self.out.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.str(s);
        }
        self.out.push(b']');
    }
}
