import KeyrackCore
import SecretSharing
import TrustQuorum

// The operator and the control plane, and the invariant checks.

extension Simulator {
    @discardableResult
    func startReconfiguration(_ members: Set<Int>) -> Bool {
        controlPlaneChanged = true
        let action: ControlPlaneAction?
        do {
            action = try controlPlane.startReconfiguration(members: Set(members.map { ids[$0] }), available: available)
        } catch {
            return false
        }
        targetMembers = members
        if let action { execute([action]) }
        return true
    }

    /// The operator asks for the upgrade from LRTQ with the current members.
    func startUpgrade(_ members: Set<Int>) {
        controlPlaneChanged = true
        let action: ControlPlaneAction?
        do {
            action = try controlPlane.startUpgradeFromLrtq(members: Set(members.map { ids[$0] }), available: available)
        } catch {
            return
        }
        if let action { execute([action]) }
    }

    /// Adds `node` under LRTQ: the first member that is up and has a spare
    /// share hands one over (once it has rebuilt the LRTQ secret; until
    /// then the event only starts that, and the operator tries again later).
    func addUnderLrtq(_ node: Int) {
        for donor in targetMembers.sorted() where nodes[donor].up {
            guard nodes[donor].node.persistentState.lrtq?.spareShares.isEmpty == false else { continue }
            let package: LrtqState?
            do {
                package = try nodes[donor].node.handOutLrtqSpareShare()
            } catch {
                process(donor)
                continue
            }
            process(donor)
            guard let package else { return }
            let state = PersistentState(
                lrtq: package, configurations: [:], shares: [:], committedEpochs: [], expunged: nil)
            nodes[node].persisted = state
            nodes[node].node = Node(
                platformId: ids[node], rackId: rackId, persistentState: state, operatorVerifier: operatorVerifier)
            loadedBy[node] = nil
            markDirty(node)
            targetMembers.insert(node)
            lrtqNodesAdded += 1
            if nodes[node].up {
                process(node)
                updateConnectivity(bouncing: node)
            }
            return
        }
    }

    func controlPlaneStep() {
        controlPlaneChanged = true
        let available = self.available
        var actions: [ControlPlaneAction] = []
        if let (_, coordinator) = controlPlane.currentAttempt, let index = indexOf[coordinator], nodes[index].up,
            let status = nodes[index].node.coordinatorStatus
        {
            actions += controlPlane.coordinatorReported(status, from: coordinator, available: available)
        }
        actions += controlPlane.tick(available: available)
        execute(actions)
    }

    /// Carries out the control plane's actions on the nodes that are up and
    /// tells the control plane what became of each (``ControlPlane/record(_:outcome:available:)``,
    /// the same call the operator makes), following the retries it returns.
    func execute(_ actions: [ControlPlaneAction]) {
        var queue = actions
        while !queue.isEmpty {
            let action = queue.removeFirst()
            guard let index = indexOf[action.target], nodes[index].up else { continue }
            let outcome = carryOut(action, on: index)
            process(index)
            if let next = controlPlane.record(action, outcome: outcome, available: available) {
                queue.append(next)
            }
        }
    }

    /// Asks node `index` to do `action`, signed by the operator's key.
    func carryOut(_ action: ControlPlaneAction, on index: Int) -> ControlPlaneOutcome {
        switch action {
        case .commit(_, let config), .prepareAndCommit(_, let config): signedCommits[config.epoch] = config
        default: break
        }
        do {
            try nodes[index].node.perform(try action.signed(by: operatorKey), using: &protocolRandom)
            return .done
        } catch let error as ActionError {
            return .refused(code: error.code, reason: "")  // the simulator reads only the code
        } catch {
            return .refused(code: "\(error)", reason: "")
        }
    }

    func load(_ index: Int, _ epoch: Epoch) {
        lastLoad = nil
        guard nodes[index].up else { return }
        let result = try? nodes[index].node.loadRackSecret(epoch)
        process(index)
        guard let secret = result else { return }
        lastLoad = secret
        if var violation = InvariantChecker.checkLoadedSecret(
            secret,
            epoch: epoch,
            node: ids[index],
            firstLoaded: loadedSecrets[epoch]
        ) {
            violation.eventIndex = log.count - 1
            violations.append(violation)
        }
        if loadedSecrets[epoch] == nil { loadedSecrets[epoch] = secret }
        if epoch == nodes[index].persisted.latestCommittedEpoch { loadedBy[index] = epoch }
    }

    func view(_ index: Int) -> NodeView {
        let node = nodes[index]
        return node.up
            ? NodeView(node.node, alarms: node.alarms)
            : NodeView(id: ids[index], state: node.persisted, alarms: node.alarms)
    }

    func markDirty(_ index: Int) {
        if !dirty[index] {
            dirty[index] = true
            dirtyList.append(index)
        }
    }

    /// Checks the nodes the last event touched (and the control plane if it
    /// may have changed) against everything checked before.
    func checkInvariants() {
        for index in dirtyList { views[index] = view(index) }
        let found = checker.check(
            nodes: views,
            changed: dirtyList,
            controlPlane: ControlPlaneView(controlPlane),
            controlPlaneChanged: controlPlaneChanged,
            index: indexOf
        )
        var trust: [Violation] = []
        for index in dirtyList {
            let (violations, held) = InvariantChecker.checkTrust(
                views[index], before: heldShares[index], signedCommits: signedCommits)
            heldShares[index] = held
            trust += violations
        }
        for index in dirtyList { dirty[index] = false }
        dirtyList.removeAll(keepingCapacity: true)
        controlPlaneChanged = false
        for var violation in found + trust {
            violation.eventIndex = log.count - 1
            violations.append(violation)
        }
    }
}
