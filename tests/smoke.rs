use ringvisor::{backend_tests, ListenOptions, Loop};
use std::io::{Read, Write};
use std::time::Duration;

backend_tests! {
    fn smoke(backend) {
        let mut lp = Loop::builder().backend(backend).build().unwrap();
        let fd = lp.listen_tcp("127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
        let addr = ringvisor::local_addr(fd).unwrap();
        let t = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"hello").unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            b
        });
        lp.accept(fd, |lp, res| {
            let (c, _) = res.unwrap();
            lp.recv(c, Vec::with_capacity(64), move |lp, n, buf| {
                assert_eq!(n.unwrap(), 5);
                lp.send_all(c, buf, move |lp, n, _| {
                    assert_eq!(n.unwrap(), 5);
                    lp.close(c, |_, r| r.unwrap());
                });
            });
        });
        let fired = std::rc::Rc::new(std::cell::Cell::new(false));
        let f = fired.clone();
        lp.timer(Duration::from_millis(5), move |_| f.set(true));
        lp.run().unwrap();
        assert!(fired.get());
        assert_eq!(&t.join().unwrap(), b"hello");
        println!("{:?}", lp.stats());
    }
}
