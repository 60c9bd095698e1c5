//! Random supervision trees and crash schedules, checked against a small
//! reference model of OTP's restart rules (strategy, restart type, intensity,
//! escalation). Mirrors the spirit of supervisor_SUITE's restart cases.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ringvisor_behaviours::gen_server::{
    self, Ctx, GenServer, Init, Reply, ServerRef, StartOptions,
};
use ringvisor_behaviours::supervisor::{self, ChildSpec, Flags, Restart, Strategy as SupStrategy};
use ringvisor_behaviours::{whereis, ExitReason, From};
use ringvisor_runtime::{backend_tests, Backend, Loop};

type Starts = Rc<RefCell<HashMap<String, u32>>>;

struct Worker;

enum Die {
    Panic,
    Normal,
}

impl GenServer for Worker {
    type Args = (String, Starts);
    type Call = Die;
    type Reply = ();
    type Cast = ();
    type Info = ();
    type Continue = ();
    fn init((id, starts): (String, Starts), _: &mut Ctx<Self>) -> Init<Self> {
        *starts.borrow_mut().entry(id).or_default() += 1;
        Init::ok(Worker)
    }
    fn handle_call(&mut self, die: Die, _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> {
        match die {
            Die::Panic => panic!("scheduled crash"),
            Die::Normal => Reply::Stop(ExitReason::Normal, Some(())),
        }
    }
}

/// A generated tree node.
#[derive(Debug, Clone)]
enum Node {
    Worker(Restart),
    Sup(SupStrategy, u32, Vec<Node>),
}

fn restart_strategy() -> impl proptest::strategy::Strategy<Value = Restart> {
    prop_oneof![
        Just(Restart::Permanent),
        Just(Restart::Transient),
        Just(Restart::Temporary)
    ]
}

fn sup_strategy() -> impl proptest::strategy::Strategy<Value = SupStrategy> {
    prop_oneof![
        Just(SupStrategy::OneForOne),
        Just(SupStrategy::OneForAll),
        Just(SupStrategy::RestForOne)
    ]
}

fn tree() -> impl proptest::strategy::Strategy<Value = Node> {
    let leaf = restart_strategy().prop_map(Node::Worker);
    let subtree = leaf.prop_recursive(2, 10, 4, |inner| {
        (sup_strategy(), 0u32..3, prop::collection::vec(inner, 1..4))
            .prop_map(|(s, m, c)| Node::Sup(s, m, c))
    });
    // The root is always a supervisor.
    (
        sup_strategy(),
        0u32..3,
        prop::collection::vec(subtree, 1..4),
    )
        .prop_map(|(s, m, c)| Node::Sup(s, m, c))
}

/// The reference model: an arena of nodes with OTP's rules applied directly.
#[derive(Debug, Clone)]
struct MNode {
    parent: Option<usize>,
    id: String,
    restart: Restart,
    sup: Option<(SupStrategy, u32)>,
    /// Original children (a restarted supervisor gets all of them back).
    spec_children: Vec<usize>,
    /// Current child specs (temporaries drop out when they end).
    children: Vec<usize>,
    alive: bool,
    restarts: u32,
    starts: u32,
}

struct Model {
    nodes: Vec<MNode>,
}

impl Model {
    fn build(root: &Node) -> Model {
        let mut model = Model { nodes: Vec::new() };
        let mut stack = vec![(root.clone(), None::<usize>)];
        while let Some((node, parent)) = stack.pop() {
            let index = model.nodes.len();
            let (restart, sup, kids) = match node {
                Node::Worker(r) => (r, None, Vec::new()),
                Node::Sup(s, m, kids) => (Restart::Permanent, Some((s, m)), kids),
            };
            let id = if sup.is_some() {
                format!("s{index}")
            } else {
                format!("w{index}")
            };
            model.nodes.push(MNode {
                parent,
                id,
                restart,
                sup,
                spec_children: Vec::new(),
                children: Vec::new(),
                alive: false,
                restarts: 0,
                starts: 0,
            });
            if let Some(p) = parent {
                model.nodes[p].spec_children.push(index);
            }
            // Reverse so children get indices in order.
            for kid in kids.into_iter().rev() {
                stack.push((kid, Some(index)));
            }
        }
        // Children were pushed in reverse pop order; restore declaration order.
        for node in &mut model.nodes {
            node.spec_children.sort();
        }
        model.start(0);
        model
    }

    /// Starts a subtree (a supervisor gets its original children back).
    fn start(&mut self, root: usize) {
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            let node = &mut self.nodes[n];
            node.alive = true;
            node.starts += 1;
            node.restarts = 0;
            node.children = node.spec_children.clone();
            stack.extend(node.children.iter().rev());
        }
    }

    /// Stops a subtree.
    fn stop(&mut self, root: usize) {
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            self.nodes[n].alive = false;
            stack.extend(self.nodes[n].children.clone());
        }
    }

    /// Child `c` of supervisor `p` ended with a normal or abnormal reason.
    fn child_exited(&mut self, mut p: usize, mut c: usize, mut normal: bool) {
        loop {
            self.stop(c);
            let restart = match self.nodes[c].restart {
                Restart::Permanent => true,
                Restart::Transient => !normal,
                Restart::Temporary => false,
            };
            if !restart {
                if self.nodes[c].restart == Restart::Temporary {
                    self.nodes[p].children.retain(|k| *k != c);
                }
                return;
            }
            self.nodes[p].restarts += 1;
            let (strategy, max) = self.nodes[p].sup.expect("parent is a supervisor");
            if self.nodes[p].restarts > max {
                // Escalate: p stops its children and exits with {shutdown, ...}.
                self.stop(p);
                match self.nodes[p].parent {
                    None => return,
                    Some(grand) => {
                        c = p;
                        p = grand;
                        normal = true; // ShutdownWith is a normal reason; supervisors are permanent
                        continue;
                    }
                }
            }
            let kids = self.nodes[p].children.clone();
            let pos = kids.iter().position(|k| *k == c).expect("child present");
            let affected: Vec<usize> = match strategy {
                SupStrategy::OneForOne | SupStrategy::SimpleOneForOne => vec![c],
                SupStrategy::OneForAll => kids.clone(),
                SupStrategy::RestForOne => kids[pos..].to_vec(),
            };
            for k in affected.iter().rev() {
                if *k != c && self.nodes[*k].alive {
                    self.stop(*k);
                    if self.nodes[*k].restart == Restart::Temporary {
                        self.nodes[p].children.retain(|x| x != k);
                    }
                }
            }
            for k in affected {
                if self.nodes[p].children.contains(&k) {
                    self.start(k);
                }
            }
            return;
        }
    }

    fn live_workers(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|n| self.nodes[*n].sup.is_none() && self.nodes[*n].alive)
            .collect()
    }
}

/// Builds the real tree from the model's arena.
fn spec_for(model: &Model, n: usize, starts: &Starts) -> ChildSpec {
    let node = &model.nodes[n];
    match node.sup {
        None => {
            let (id, starts) = (node.id.clone(), starts.clone());
            ChildSpec::named_worker::<Worker>(node.id.clone(), move || (id.clone(), starts.clone()))
                .restart(node.restart)
        }
        Some((strategy, max)) => {
            let kids: Vec<ChildSpec> = node
                .spec_children
                .iter()
                .map(|k| spec_for(model, *k, starts))
                .collect();
            let flags = Flags::new(strategy).intensity(max, Duration::from_secs(3600));
            ChildSpec::supervisor(node.id.clone(), flags, move || kids.clone())
        }
    }
}

fn check(backend: Backend, root: Node, schedule: Vec<(usize, bool)>) -> Result<(), TestCaseError> {
    let mut model = Model::build(&root);
    let mut lp = Loop::builder().backend(backend).build().expect("loop");
    let starts = Starts::default();
    let (strategy, max) = model.nodes[0].sup.expect("root is a supervisor");
    let kids: Vec<ChildSpec> = model.nodes[0]
        .spec_children
        .iter()
        .map(|k| spec_for(&model, *k, &starts))
        .collect();
    let flags = Flags::new(strategy).intensity(max, Duration::from_secs(3600));
    let top = supervisor::start(&mut lp, "s0", flags, kids, StartOptions::default())
        .expect("tree starts");
    for (pick, panic) in schedule {
        let live = model.live_workers();
        if live.is_empty() || !model.nodes[0].alive {
            break;
        }
        let w = live[pick % live.len()];
        let pid = whereis(&lp, &model.nodes[w].id).expect("model says alive");
        let die = if panic { Die::Panic } else { Die::Normal };
        gen_server::call(
            &mut lp,
            ServerRef::<Worker>::from_pid(pid),
            die,
            Duration::from_secs(5),
            |_, _| {},
        );
        lp.run().expect("loop runs");
        let parent = model.nodes[w].parent.expect("workers have a parent");
        model.child_exited(parent, w, !panic);
        for node in model.nodes.iter().filter(|n| n.sup.is_none()) {
            let alive = whereis(&lp, &node.id).is_some();
            prop_assert_eq!(alive, node.alive, "worker {} alive", node.id);
            let started = starts.borrow().get(&node.id).copied().unwrap_or(0);
            prop_assert_eq!(started, node.starts, "worker {} starts", node.id);
        }
        prop_assert_eq!(
            ringvisor_behaviours::is_alive(&mut lp, top.pid()),
            model.nodes[0].alive,
            "top supervisor alive"
        );
    }
    Ok(())
}

backend_tests! {
    fn random_trees_and_crashes_follow_otp_rules(backend) {
        let mut runner = TestRunner::new(Config { cases: 64, ..Config::default() });
        let input = (tree(), prop::collection::vec((0usize..16, any::<bool>()), 1..10));
        runner
            .run(&input, |(root, schedule)| check(backend, root, schedule))
            .expect("supervision follows the model");
    }
}
