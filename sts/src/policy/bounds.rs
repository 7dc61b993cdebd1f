//! Bounds on what one policy evaluation may cost, so a zone's policy cannot stall or abort the
//! control plane for every zone.
//!
//! * Builtins that allocate in proportion to an argument, in one step the interpreter's timer
//!   cannot interrupt, are replaced by bounded versions (regorus looks extensions up before
//!   builtins): `numbers.range` and `numbers.range_step` produce at most [`MAX_RANGE`] elements, and
//!   `sprintf` refuses widths and precisions above [`MAX_FORMAT_WIDTH`] (then formats with the real
//!   builtin). Past a bound the evaluation fails: 503 `policy_eval_failed`, never an allow.
//! * Every evaluation runs under regorus's cooperative execution timer (set process-wide by
//!   [`install_timer`]), so loops and comprehensions stop at the budget.
//! * An upload is evaluated once against a sample input ([`dry_run`]) on its own thread; a policy
//!   that fails a bound or its time budget there is refused before it can be activated.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::time::Duration;

use regorus::Value;

/// Most elements `numbers.range` / `numbers.range_step` may produce.
pub const MAX_RANGE: u64 = 100_000;
/// Largest width or precision in a `sprintf` format.
pub const MAX_FORMAT_WIDTH: u64 = 4096;

/// Sets the process-wide regorus execution timer: evaluations stop (with an error) once they have
/// run for `budget`. Compiled policies pick it up for every evaluation.
pub fn install_timer(budget: Duration) {
    regorus::utils::limits::set_fallback_execution_timer_config(Some(regorus::utils::limits::ExecutionTimerConfig {
        limit: budget,
        check_interval: NonZeroU32::new(32).expect("non-zero"),
    }));
}

/// Registers the bounded builtins on an engine before it compiles a policy.
pub fn register(engine: &mut regorus::Engine) -> anyhow::Result<()> {
    engine.add_extension("numbers.range".into(), 2, Box::new(|args: Vec<Value>| range(&args, false)))?;
    engine.add_extension("numbers.range_step".into(), 3, Box::new(|args: Vec<Value>| range(&args, true)))?;
    engine.add_extension("sprintf".into(), 2, Box::new(|args: Vec<Value>| sprintf(&args)))?;
    Ok(())
}

fn integer(v: &Value) -> Option<i64> {
    v.as_i64().ok()
}

/// `numbers.range(a, b)` / `numbers.range_step(a, b, step)` with at most [`MAX_RANGE`] elements.
/// Non-integer operands are undefined, as with the builtin.
fn range(args: &[Value], stepped: bool) -> anyhow::Result<Value> {
    let (Some(a), Some(b)) = (args.first().and_then(integer), args.get(1).and_then(integer)) else { return Ok(Value::Undefined) };
    let step = if stepped {
        match args.get(2).and_then(integer) {
            Some(s) if s > 0 => s,
            _ => anyhow::bail!("numbers.range_step: step must be a positive integer"),
        }
    } else {
        1
    };
    let count = (i128::from(b) - i128::from(a)).unsigned_abs() / step as u128 + 1;
    if count > u128::from(MAX_RANGE) {
        anyhow::bail!("numbers.range of {count} elements exceeds the limit of {MAX_RANGE}");
    }
    let dir = if b >= a { step } else { -step };
    let values: Vec<Value> = (0..count as i64).map(|i| Value::from(a + i * dir)).collect();
    Ok(Value::from(values))
}

thread_local! {
    /// The real `sprintf`, behind a one-rule policy (formatting is delegated once the format passed).
    static SPRINTF: RefCell<Option<regorus::CompiledPolicy>> = const { RefCell::new(None) };
}

fn real_sprintf() -> anyhow::Result<regorus::CompiledPolicy> {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(false);
    engine.add_policy("sprintf.rego".into(), "package caracal.sprintf\nr := sprintf(input.f, input.a)\n".into())?;
    engine.compile_with_entrypoint(&"data.caracal.sprintf.r".into())
}

/// `sprintf(format, values)` refusing widths and precisions above [`MAX_FORMAT_WIDTH`].
fn sprintf(args: &[Value]) -> anyhow::Result<Value> {
    let [format, values] = args else { anyhow::bail!("sprintf takes two arguments") };
    let Ok(f) = format.as_string() else { return Ok(Value::Undefined) };
    if let Some(w) = widest(f) {
        anyhow::bail!("sprintf width {w} exceeds the limit of {MAX_FORMAT_WIDTH}");
    }
    let mut input = Value::new_object();
    input.as_object_mut()?.insert(Value::from("f"), format.clone());
    input.as_object_mut()?.insert(Value::from("a"), values.clone());
    SPRINTF.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(real_sprintf()?);
        }
        slot.as_ref().expect("set above").eval_with_input(input)
    })
}

/// The first width or precision in `format` above the limit (any run of digits after a `%`, before
/// the verb), or `None`. Non-ASCII digits count as over the limit.
fn widest(format: &str) -> Option<u64> {
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let mut n: u64 = 0;
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() {
                n = n.saturating_mul(10).saturating_add(u64::from(d as u8 - b'0'));
            } else if d.is_numeric() {
                return Some(u64::MAX);
            } else if matches!(d, '.' | '-' | '+' | ' ' | '#') {
                n = 0;
            } else {
                break;
            }
            if n > MAX_FORMAT_WIDTH {
                return Some(n);
            }
            chars.next();
        }
        chars.next();
    }
    None
}

/// Evaluates a freshly compiled upload once against sample inputs within `budget`, on its own
/// thread. `Err` when the evaluation hits a bound or the budget (other evaluation errors are left
/// to the activation and the contract checks: they may depend on the input).
pub fn dry_run(policy: regorus::CompiledPolicy, budget: Duration) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("policy-dry-run".into())
        .spawn(move || {
            for input in sample_inputs() {
                if let Err(e) = policy.eval_with_input(Value::from(input)) {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
            let _ = tx.send(Ok(()));
        })
        .map_err(|e| format!("could not start the dry run: {e}"))?;
    match rx.recv_timeout(budget) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if is_bound(&e) => Err(format!("the policy exceeds an evaluation bound on a sample input: {e}")),
        Ok(Err(_)) => Ok(()),
        Err(_) => Err(format!("the policy did not finish evaluating a sample input within {} ms", budget.as_millis())),
    }
}

fn is_bound(error: &str) -> bool {
    ["exceeds the limit", "execution time limit", "time limit", "exceeded"].iter().any(|m| error.contains(m))
}

fn sample_inputs() -> [serde_json::Value; 2] {
    let base = serde_json::json!({
        "schema_version": super::INPUT_SCHEMA_VERSION,
        "principal": {"type": "Application", "id": "app", "zone_id": "zone", "traits": ["sample"]},
        "resource": {"type": "Resource", "id": "r", "identifier": "https://api.example/tools", "scopes": ["tools.read", "tools.write"]},
        "action": {"id": "TokenExchange", "use": "resource", "method": "GET", "path": "/items/1"},
        "session": {"id": "s", "root_id": "s"},
        "context": {
            "requested_scopes": ["tools.read"],
            "subject_claims": {"use": "gateway", "scope": "tools.read", "target": ["https://api.example/tools"], "sub": "app", "sub_type": "application"},
            "request_id": "dry-run",
        },
    });
    let mut session = base.clone();
    session["resource"] = serde_json::Value::Null;
    session["action"] = serde_json::json!({"id": "TokenExchange", "use": "session"});
    [base, session]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_range_matches_the_builtin_within_the_bound() {
        let ints = |v: Value| -> Vec<i64> { v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect() };
        assert_eq!(ints(range(&[Value::from(1i64), Value::from(4i64)], false).unwrap()), vec![1, 2, 3, 4]);
        assert_eq!(ints(range(&[Value::from(3i64), Value::from(1i64)], false).unwrap()), vec![3, 2, 1]);
        assert_eq!(ints(range(&[Value::from(0i64), Value::from(10i64), Value::from(4i64)], true).unwrap()), vec![0, 4, 8]);
        assert_eq!(range(&[Value::from(1.5f64), Value::from(3i64)], false).unwrap(), Value::Undefined);
        let err = range(&[Value::from(1i64), Value::from(100_000_000i64)], false).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        assert!(range(&[Value::from(i64::MIN), Value::from(i64::MAX)], false).is_err(), "no overflow on the widest span");
    }

    #[test]
    fn format_widths_are_bounded() {
        assert_eq!(widest("%s and %d and %05d and %.3f and %%"), None);
        assert_eq!(widest("%04096d"), None);
        assert!(widest("%04097d").is_some());
        assert!(widest("%.99999999999999999999f").is_some());
        assert!(widest("%٣d").is_some(), "non-ASCII digits are refused, not parsed");
    }
}
